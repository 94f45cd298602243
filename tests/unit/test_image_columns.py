"""The image columns have one home, ``clipsql.database.images.COLUMNS``: the shapes that name
them elsewhere (the web API's rows, the SQLAlchemy ``Image``'s annotations for type
checkers) name exactly those columns, in that order."""

from __future__ import annotations

import ast
import types
import typing
from pathlib import Path

from clipsql.database import images
from clipsql.web import schemas

SQLALCHEMY = Path(__file__).resolve().parents[2] / "clipsql" / "sqlalchemy" / "__init__.py"
WEB_EXTRAS = ("name", "thumbnail_url", "image_url", "video_url")


def _allows_none(annotation) -> bool:
    return isinstance(annotation, types.UnionType) and type(None) in typing.get_args(annotation)


def test_the_web_api_rows_are_the_image_columns():
    hit_columns = [c.name for c in images.HIT]
    row = [f for f in schemas.Hit.model_fields if f not in WEB_EXTRAS]
    assert row[:len(hit_columns)] == hit_columns
    details = [f for f in schemas.ImageOut.model_fields if f not in WEB_EXTRAS]
    assert sorted(details) == sorted(c.name for c in images.DETAILS)
    for c in images.DETAILS:
        field = schemas.ImageOut.model_fields[c.name]
        assert _allows_none(field.annotation) == c.nullable, c.name
        assert field.is_required(), c.name  # nullable, but always in the answer


def _type_checking_names(class_name: str) -> list[str]:
    """The names annotated under ``if TYPE_CHECKING:`` in the body of ``class_name``."""
    tree = ast.parse(SQLALCHEMY.read_text(encoding="utf-8"))
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == class_name)
    blocks = [n for n in cls.body if isinstance(n, ast.If)
              and isinstance(n.test, ast.Name) and n.test.id == "TYPE_CHECKING"]
    assert len(blocks) == 1, f"{class_name} has {len(blocks)} `if TYPE_CHECKING:` blocks"
    return [n.target.id for n in blocks[0].body
            if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)]


def test_the_sqlalchemy_image_annotations_are_the_image_columns():
    assert _type_checking_names("Image") == [c.name for c in images.COLUMNS]
