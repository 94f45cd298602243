"""A small shop app with its own ``products`` table whose photos live in clipsql.images.

Shared by the "use it from your code" tests: the app's schema, its rows, a brute-force numpy
ranking to check the SQL against, and a generated collection large enough for the planner
to prefer the HNSW index.
"""

from __future__ import annotations

import numpy as np

from tests.conftest import insert_vectors

PRODUCTS_DDL = """
CREATE TABLE products (
    id          serial PRIMARY KEY,
    name        text NOT NULL,
    price       double precision NOT NULL,
    photo_path  text
);
CREATE INDEX products_photo_path_idx ON products (photo_path);
"""


def make_photos(folder, n: int = 30):
    """``n`` small distinct product photos (colours and stripes vary)."""
    from tests.conftest import make_image

    for i in range(n):
        color = ((i * 67) % 256, (i * 131 + 40) % 256, (i * 29 + 90) % 256)
        make_image(folder / f"photo{i:03d}.png", color=color, pattern=i % 9)
    return folder


def price_of(i: int) -> float:
    return float((i * 37) % 100) + 0.5


def add_products(conn, with_missing_photo: bool = True) -> int:
    """One product per image (prices spread over 0-100), plus one whose photo was never loaded."""
    conn.execute(PRODUCTS_DDL)
    paths = [r[0] for r in conn.execute("SELECT path FROM clipsql.images ORDER BY path").fetchall()]
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO products (name, price, photo_path) VALUES (%s, %s, %s)",
                        [(f"product-{i:05d}", price_of(i), p) for i, p in enumerate(paths)])
    if with_missing_photo:
        conn.execute("INSERT INTO products (name, price, photo_path) "
                     "VALUES ('no photo', 1.0, '/nowhere/missing.jpg')")
    return len(paths)


def brute_force(conn, query, max_price: float, k: int) -> list[str]:
    """Product names best first: tables read separately, joined, filtered and ranked in numpy."""
    products = conn.execute("SELECT name, price, photo_path FROM products").fetchall()
    images = dict(conn.execute("SELECT path, embedding FROM clipsql.images").fetchall())
    rows = [(name, images[path]) for name, price, path in products
            if price < max_price and path in images]
    emb = np.stack([e.to_numpy().astype(np.float32) for _, e in rows])
    q = np.asarray(query, dtype=np.float16).astype(np.float32)  # bound as halfvec, like the SQL
    scores = (emb @ q) / (np.linalg.norm(emb, axis=1) * np.linalg.norm(q))
    order = np.argsort(-scores, kind="stable")[:k]
    return [rows[i][0] for i in order]


def generate_collection(db, n: int, seed: int = 0) -> np.ndarray:
    """``n`` clustered unit vectors as images of the collection's own model (no files), with
    the HNSW index built and statistics fresh; returns the vectors."""
    from clipsql.database import binding, hnsw

    dim = db.model.dim
    binding.bind_model(db.conn, db.model.identity(), spec=str(db.model.spec))
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(40, dim))
    vecs = centers[rng.integers(0, 40, n)] + 0.5 * rng.normal(size=(n, dim))
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    insert_vectors(db.conn, vecs, path_sql="'/gen/' || lpad(i::text, 6, '0') || '.jpg'", sha256="''")
    hnsw.ensure_index(db.conn)
    return vecs


def analyze(conn) -> None:
    conn.execute("ANALYZE clipsql.images")
    conn.execute("ANALYZE products")


def plan_text(conn, sql: str, params=()) -> str:
    return "\n".join(r[0] for r in conn.execute("EXPLAIN " + sql, params).fetchall())


def build_shop(db, folder, n: int = 30) -> int:
    """Photos on disk, loaded into the collection, and the shop's products pointing at them."""
    report = db.load(make_photos(folder, n))
    assert report.added == n, report
    return add_products(db.conn)


#: The shop's question, asked every way: products under a price, best match to a query first.
SHOP_SQL = ("SELECT p.name, i.path FROM products p JOIN clipsql.images i ON i.path = p.photo_path "
            "WHERE p.price < %s ORDER BY i.embedding <=> %s LIMIT %s")
