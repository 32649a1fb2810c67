"""The one place the report reads run folders: the results table, sanity table and run.json.

Until `camscope.run.results` lands on main this module reads ``DIR/results/part-*.parquet`` with
pyarrow directly, applying the de-duplication rule of docs/CONTRACT.md: part files are ordered by
modification time, then name (over all folders); when (key, name, method) occurs more than once
the row of the part read last wins; a failed row is dropped when an ok row exists for its
(key, name). `RunTable.read` returns the kept rows of the requested columns; `RunTable.batches`
streams the same rows, in the same order, one part file (or row group) at a time, so per-row
lists (maps, curves) never all sit in memory at once.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

log = logging.getLogger("camscope")

__all__ = ["RunTable", "read_run", "read_sanity"]

_IDENTITY = ("key", "name", "method", "status")


class RunFolderError(ValueError):
    """A run folder the report cannot read (one line naming the file and the cause)."""


def _parts(run_dirs: Sequence[Path]) -> list[tuple[Path, Path]]:
    """(run_dir, part file) over all folders, oldest first (mtime, then name)."""
    found = []
    for run_dir in run_dirs:
        folder = Path(run_dir) / "results"
        if not folder.is_dir():
            raise RunFolderError(f"{folder}: no results table (is {run_dir} a camscope run?)")
        for part in folder.glob("part-*.parquet"):
            found.append((part.stat().st_mtime_ns, part.name, Path(run_dir), part))
    found.sort(key=lambda t: (t[0], t[1]))
    return [(d, p) for _, _, d, p in found]


def _keep_mask(ident: pa.Table) -> np.ndarray:
    """Rows kept by the de-duplication rule, as a bool mask over ``ident``'s rows."""
    n = ident.num_rows
    key = pc.fill_null(ident["key"], "").to_numpy(zero_copy_only=False).astype(object)
    name = pc.fill_null(ident["name"], "").to_numpy(zero_copy_only=False).astype(object)
    method = pc.fill_null(ident["method"], "").to_numpy(zero_copy_only=False).astype(object)
    ok = pc.equal(ident["status"], "ok").to_numpy(zero_copy_only=False)
    last: dict[tuple[str, str, str], int] = {}
    for i, triple in enumerate(zip(key, name, method, strict=True)):
        last[triple] = i
    keep = np.zeros(n, dtype=bool)
    keep[list(last.values())] = True
    ok_images = {(k, m) for k, m, good in zip(key, name, ok, strict=True) if good}
    failed_but_ok = np.array(
        [not good and (k, m) in ok_images for k, m, good in zip(key, name, ok, strict=True)],
        dtype=bool,
    )
    return keep & ~failed_but_ok


class RunTable:
    """The de-duplicated results table of one or more run folders (shards).

    Example:
        >>> table = RunTable([Path("out")])                      # doctest: +SKIP
        >>> table.read(["name", "method", "deletion_auc"])       # doctest: +SKIP
    """

    def __init__(self, run_dirs: Sequence[Path]) -> None:
        self.run_dirs = [Path(d) for d in run_dirs]
        self._parts = _parts(self.run_dirs)
        self.columns = self._schema_names()
        idents = [self._read_part(p, list(_IDENTITY)) for _, p in self._parts]
        ident = pa.concat_tables(idents) if idents else None
        self._keep = _keep_mask(ident) if ident is not None else np.zeros(0, dtype=bool)
        sizes = [t.num_rows for t in idents]
        self._offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int)

    @property
    def num_rows(self) -> int:
        """Rows kept after de-duplication."""
        return int(self._keep.sum())

    def _schema_names(self) -> list[str]:
        names: dict[str, None] = {}
        for _, part in self._parts:
            names.update(dict.fromkeys(pq.read_schema(part).names))
        return list(names)

    def _read_part(self, part: Path, columns: Sequence[str]) -> pa.Table:
        try:
            have = set(pq.read_schema(part).names)
            table = pq.read_table(part, columns=[c for c in columns if c in have])
        except (OSError, pa.ArrowException) as exc:
            raise RunFolderError(f"{part}: unreadable results part ({exc})") from None
        for c in columns:
            if c not in have:
                table = table.append_column(c, pa.nulls(table.num_rows))
        return table.select(list(columns))

    def batches(self, columns: Sequence[str]) -> Iterator[pa.Table]:
        """The kept rows of ``columns`` (+ ``run_dir``), one part file at a time, in order."""
        for k, (run_dir, part) in enumerate(self._parts):
            mask = self._keep[self._offsets[k] : self._offsets[k + 1]]
            if not mask.any():
                continue
            table = self._read_part(part, columns).filter(pa.array(mask))
            yield table.append_column("run_dir", pa.array([str(run_dir)] * table.num_rows))

    def read(self, columns: Sequence[str]) -> pa.Table:
        """All kept rows of ``columns`` (+ ``run_dir``); only for scalar columns."""
        tables = list(self.batches(columns))
        if not tables:
            empty = {c: pa.array([], pa.null()) for c in [*columns, "run_dir"]}
            return pa.table(empty)
        return pa.concat_tables(tables, promote_options="permissive")


def read_run(run_dir: Path) -> dict:
    """run.json of a run folder; RunFolderError (one line) when missing or not JSON."""
    path = Path(run_dir) / "run.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RunFolderError(f"{path}: cannot read run settings ({exc})") from None
    if not isinstance(data, dict):
        raise RunFolderError(f"{path}: not a JSON object")
    return data


def read_sanity(run_dirs: Sequence[Path]) -> pa.Table | None:
    """sanity.parquet rows of every folder that has one (+ ``run_dir``), or None."""
    tables = []
    for run_dir in run_dirs:
        path = Path(run_dir) / "sanity.parquet"
        if not path.exists():
            continue
        try:
            table = pq.read_table(path)
        except (OSError, pa.ArrowException) as exc:
            log.warning("%s: unreadable sanity table, left out (%s)", path, exc)
            continue
        tables.append(table.append_column("run_dir", pa.array([str(run_dir)] * table.num_rows)))
    return pa.concat_tables(tables, promote_options="permissive") if tables else None
