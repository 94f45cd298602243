"""The rows' half of a reembed (:mod:`clipsql.reembed.switch`): embed the images still
holding the placeholder in ``embedding_next``, a batch per transaction.

A batch is written only to rows that did not change since they were read (same
``updated_at``): a row a load rewrote meanwhile keeps the placeholder for the next pass.
A file whose content is no longer the row's (its sha256 differs: overwritten with another
photo) is not embedded into that row, which would give it another photo's vector under the
old hash and metadata: it is reported as ``changed`` and its row left whole, for a load of
its folder to re-read (new hash, metadata and vector), after which the reembed embeds it.
Files that cannot be read or changed are remembered for the rest of the run and reported
together.
"""

from __future__ import annotations

from clipsql.database.queries import SQL
from clipsql.errors import ImageError, LoadError
from clipsql.ingest.decoder_pool import Decoders
from clipsql.models.image import stack

#: The new model's column (``queries.sql`` names it in the reembed's statements; a row still
#: to embed holds the all-zero placeholder there).
NEXT = "embedding_next"
#: Unreadable files named in the error (all are in the report's ``failures``).
SHOWN_FAILURES = 3
#: The reason of a file whose content changed since its row was loaded.
CHANGED = "changed"


class RowEmbedder:
    """Fills ``embedding_next`` with ``model`` (decoding through ``pool``, set by the caller)."""

    def __init__(self, conn, model, run_id: int, report, batch_size: int, progress=None):
        self.conn, self.model, self.run_id, self.report = conn, model, run_id, report
        self.batch_size, self.progress = batch_size, progress
        self.pool: Decoders | None = None
        self.failed: dict[int, tuple[str, str]] = {}

    def fill(self) -> None:
        """One pass, in id order, over the rows still to embed (resumable at any batch)."""
        done, total = self.conn.execute(SQL["reembed_counts"]).fetchone()
        self.report.total = total
        last = 0
        while True:
            rows = self.conn.execute(SQL["reembed_rows_todo"], (last, self.batch_size)).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            futures = [(r, self.pool.submit_row(r[1], r[4])) for r in rows
                       if r[0] not in self.failed]
            decoded = []
            for row, future in futures:
                try:
                    d = Decoders.result(future)
                except ImageError as exc:
                    self.failed[row[0]] = (row[1], f"{exc.reason}: {exc.detail}")
                    continue
                if d.sha256 == row[3]:
                    decoded.append((row, d))
                elif not self._rewritten(row):  # else a load rewrote it: the next pass
                    self.failed[row[0]] = (row[1], f"{CHANGED}: the file's sha256 is "
                                           f"{d.sha256[:12]}..., its row's {row[3][:12]}...")
            if decoded:
                done += self._write(decoded)
            if self.progress:
                self.progress(done, total)

    def _rewritten(self, row) -> bool:
        """Whether a load rewrote the row since it was read (it then holds the placeholder
        again, and the next pass embeds it)."""
        now = self.conn.execute(SQL["reembed_row_updated_at"], (row[0],)).fetchone()
        return now is None or now[0] != row[2]

    def _write(self, decoded) -> int:
        vectors = self.model.encode_images(stack([d.pixels for _, d in decoded]))
        texts = ["[" + ",".join(f"{x:.6g}" for x in v.tolist()) + "]" for v in vectors]
        with self.conn.transaction():
            n = self.conn.execute(
                SQL["reembed_rows_write"],
                ([r[0] for r, _ in decoded], [r[2] for r, _ in decoded], texts)).rowcount
            self.conn.execute(SQL["reembed_count_batch"], (n, self.run_id))
        self.report.embedded += n
        return n

    def raise_failures(self) -> None:
        """:class:`LoadError` naming the files that could not be read, if any."""
        self.report.failures = [(p, why) for p, why in self.failed.values()]
        if not self.failed:
            return
        shown = "; ".join(f"{p}: {why}" for p, why in self.report.failures[:SHOWN_FAILURES])
        changed = sum(why.startswith(f"{CHANGED}:") for _, why in self.report.failures)
        remedy = ("load their folders again (the current model re-reads changed files) and run "
                  "the reembed again" if changed else "restore the files, or remove their rows "
                  "(a load of their folder with prune), and run it again")
        raise LoadError(
            f"{len(self.failed)} images could not be read for the new model"
            f"{f', {changed} of them changed since they were loaded' if changed else ''} "
            f"({shown}); the reembed stays unfinished and searches keep the current model: "
            f"{remedy}")
