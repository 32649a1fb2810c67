"""The report's access to run folders: through `camscope.io.runfolder` (the folder's schema) only.

`RunTable.read` returns the de-duplicated rows of scalar columns for every image at once;
`RunTable.batches` streams the same rows, in the same order, one part file at a time, for the
per-row lists (maps, curves) that must never all sit in memory.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import pyarrow as pa

from camscope.io import runfolder as results
from camscope.io.runfolder import RunFolderError

log = logging.getLogger("camscope")

__all__ = ["RunFolderError", "RunTable", "read_run", "read_sanity"]


class RunTable:
    """The results table of one or more run folders (shards), de-duplicated by `results`.

    methods: the methods of the folders' run.json files (first seen first); ``columns`` are the
    column names the table can have for them (`results.table_schema`).

    Example:
        >>> table = RunTable([Path("out")], ["gradcam"])          # doctest: +SKIP
        >>> table.read(["name", "method", "deletion_auc"])        # doctest: +SKIP
    """

    def __init__(self, run_dirs: Sequence[Path], methods: Sequence[str]) -> None:
        self.run_dirs = [Path(d) for d in run_dirs]
        self.methods = list(dict.fromkeys(methods))
        self.columns = results.table_schema(self.methods).names
        self._row_count: int | None = None

    def read(self, columns: Sequence[str]) -> pa.Table:
        """Every kept row of ``columns`` (+ ``run_dir``); only for per-image scalar columns.

        A column no part has comes back as nulls.
        """
        table = results.read_table(self.run_dirs, columns=list(columns))
        for c in columns:
            if c not in table.column_names:
                table = table.append_column(c, pa.nulls(table.num_rows))
        return table

    def batches(self, columns: Sequence[str]) -> Iterator[pa.Table]:
        """The rows of `read`, in the same order, one part file at a time.

        A column a part lacks comes back as nulls in that part's table.
        """
        for part in results.iter_table(self.run_dirs, list(columns)):
            for c in columns:
                if c not in part.column_names:
                    part = part.append_column(c, pa.nulls(part.num_rows))
            yield part


def read_run(run_dir: Path) -> dict:
    """run.json of a run folder (`results.read_run`)."""
    return results.read_run(run_dir)


def read_sanity(run_dirs: Sequence[Path]) -> pa.Table | None:
    """sanity.parquet rows of every folder that has one (+ ``run_dir``), or None."""
    table = results.read_sanity(list(run_dirs))
    return table if table.num_rows else None
