"""The run folder's schema: every file name of a run folder, and its one reader/writer.

The layout (docs/DESIGN.md); every name below is a constant of this module::

    DIR/run.json                  RUN_JSON: settings, settings_hash, state, counts, timings
    DIR/results/part-*.parquet    RESULTS / part_name(): the results table, one row per
                                  image x method (long format)
    DIR/sanity.parquet            SANITY: the sanity check on its own small sample
    DIR/<method>/<name>.npy|.png  map_path(): per --save-maps (MAP_KINDS); per-object tasks:
                                  <name>.object<K>.npy|.png (OBJECT_INFIX, object_index K)
    DIR/grid.png, grid-2.png ...  grid_page_name(): comparison grid pages (GRID_GLOB)
    DIR/predictions.csv, metrics.csv, summary.csv, comparisons.csv, report.html, report.md,
    curves.png, distributions.png DERIVED_FILES: derived from the table at the end

It lives below both `camscope.run` (which writes run folders) and `camscope.report` (which
reads them) and imports no other camscope package than `camscope.io`; `camscope.run.results`
re-exports it under its historical name.

Part files are written atomically (temporary name + ``os.replace``) by any number of writers
(resumed sessions, Ray actors). Reading de-duplicates: for one (key, name, method) the row of
the part written last wins (mtime, then file name), and a failed row of an input is dropped
when an ok row exists for it. Evaluation, the report and the benchmarks read only through
`read_run`, `read_table`, `read_sanity` and `map_path`.

Example::

    >>> from camscope.io import runfolder
    >>> runfolder.part_name("20261127T1301-4f2a", 3)
    'part-20261127T1301-4f2a-000003.parquet'
    >>> runfolder.grid_page_name(1), runfolder.grid_page_name(2)
    ('grid.png', 'grid-2.png')
    >>> table = runfolder.read_table(["out"], columns=["method", "deletion_auc"])  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from camscope.errors import one_line
from camscope.io.files import atomic_open, escape_name, unescape_name

__all__ = [
    "COMPARISONS_CSV",
    "DERIVED_FILES",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "CURVES_PNG",
    "DISTRIBUTIONS_PNG",
    "GRID_GLOB",
    "GRID_STEM",
    "IDENTITY",
    "MAP_KINDS",
    "METRICS_CSV",
    "OBJECT_INFIX",
    "PAIR_PREFIXES",
    "PART_PREFIX",
    "PART_SUFFIX",
    "PREDICTIONS_CSV",
    "REPORT_FILES",
    "REPORT_HTML",
    "REPORT_MD",
    "SUMMARY_CSV",
    "RUN_JSON",
    "RESULTS",
    "SANITY",
    "grid_page_name",
    "grid_page_stem",
    "part_name",
    "RunFolderError",
    "compact",
    "done_keys",
    "iter_table",
    "escape_path",
    "map_path",
    "metric_columns",
    "part_files",
    "read_run",
    "read_sanity",
    "read_table",
    "table_schema",
    "unescape_path",
    "validate",
    "write_part",
    "write_sanity",
]

#: The version of the run-folder format (run.json, the results table, the file names), not of
#: the package: it changes only when a folder written before can no longer be read as it was.
FORMAT_VERSION = "0.2"
#: What a folder of this format is called in messages.
FORMAT_NAME = f"camscope {FORMAT_VERSION} run"

RUN_JSON = "run.json"
RESULTS = "results"
PART_PREFIX = "part-"
PART_SUFFIX = ".parquet"
SANITY = "sanity.parquet"
PREDICTIONS_CSV = "predictions.csv"
METRICS_CSV = "metrics.csv"
SUMMARY_CSV = "summary.csv"
COMPARISONS_CSV = "comparisons.csv"
CURVES_PNG = "curves.png"
DISTRIBUTIONS_PNG = "distributions.png"
REPORT_HTML = "report.html"
REPORT_MD = "report.md"
#: The comparison grid's pages: grid.png, grid-2.png, ... (`grid_page_name`).
GRID_STEM = "grid"
GRID_GLOB = "grid*.png"
#: Per-image files in ``DIR/<method>/``: the float32 map and the overlay (`map_path`).
MAP_KINDS = ("npy", "png")
#: The report's files (`camscope.report.build_report` writes those it can).
REPORT_FILES = (SUMMARY_CSV, COMPARISONS_CSV, CURVES_PNG, DISTRIBUTIONS_PNG, REPORT_HTML, REPORT_MD)
#: Files derived from the table at the end of a run (or by `camscope report`); --overwrite and
#: the stale-output check know exactly these (plus grid*.png, results/ and the map folders).
#: sanity.csv, agreement.csv, curves.npz and evaluation.json were written by camscope 0.1.
DERIVED_FILES = (
    PREDICTIONS_CSV,
    METRICS_CSV,
    SUMMARY_CSV,
    COMPARISONS_CSV,
    "sanity.csv",
    "agreement.csv",
    "curves.npz",
    CURVES_PNG,
    DISTRIBUTIONS_PNG,
    REPORT_HTML,
    REPORT_MD,
    "evaluation.json",
    SANITY,
)
PAIR_PREFIXES = ("pearson__", "top20_iou__")
#: Per-object map files: ``<name><OBJECT_INFIX><object_index>.npy`` (`map_path`).
OBJECT_INFIX = ".object"
#: The columns that identify a row: an image (key, name), its object (null: the whole image,
#: classification; absent from folders written before objects existed) and the method.
IDENTITY = ("key", "name", "object", "method")


class RunFolderError(Exception):
    """A run folder that cannot be read; ``str()`` is one line naming the file."""


def escape_path(path: str | os.PathLike[str]) -> str:
    r"""A path as text: bytes that are not UTF-8 become ``\xNN`` (`camscope.io.escape_name`)."""
    return escape_name(path)


def unescape_path(text: str) -> str:
    """The path `escape_path` wrote as ``text`` (`camscope.io.unescape_name`)."""
    return unescape_name(text)


def part_name(prefix: str, seq: int) -> str:
    """The file name of a results part: ``part-<prefix>-<seq:06d>.parquet``."""
    return f"{PART_PREFIX}{prefix}-{seq:06d}{PART_SUFFIX}"


def grid_page_stem(page: int) -> str:
    """The comparison grid's page ``page`` (1-based) without its ``.png``: grid, grid-2, ..."""
    return GRID_STEM if page == 1 else f"{GRID_STEM}-{page}"


def grid_page_name(page: int) -> str:
    """The file name of the comparison grid's page ``page`` (1-based)."""
    return f"{grid_page_stem(page)}.png"


def map_path(
    run_dir: str | Path, method: str, name: str, kind: str = "npy", index: int | None = None
) -> Path:
    """Where the per-image file of ``kind`` (``npy`` map or ``png`` overlay) lives.

    ``index``: the object's ``object_index`` (per-object tasks), None for one map per image.
    """
    if kind not in MAP_KINDS:
        raise ValueError(f"kind must be 'npy' or 'png', got {kind!r}")
    stem = name if index is None else f"{name}{OBJECT_INFIX}{int(index)}"
    return Path(run_dir) / method / f"{stem}.{kind}"


def table_schema(methods: Sequence[str]) -> Any:
    """The pyarrow schema of the results table for a run of ``methods``."""
    import pyarrow as pa

    f32, i32, s = pa.float32(), pa.int32(), pa.string()
    fields = [
        ("key", s),
        ("name", s),
        ("file", s),
        ("settings_hash", s),
        ("status", s),
        ("error", s),
        ("method", s),
        ("object", s),
        ("object_index", pa.int16()),
        ("object_score", f32),
        ("explained_score", f32),
        ("box", pa.list_(f32)),
        ("top1_index", i32),
        ("target_index", i32),
        ("truth_index", i32),
        ("top1_name", s),
        ("target_name", s),
        ("top1_prob", f32),
        ("top5_index", pa.list_(i32)),
        ("top5_prob", pa.list_(f32)),
        ("empty", pa.bool_()),
        ("seconds", f32),
        ("raw", pa.list_(f32)),
        ("raw_h", pa.int16()),
        ("raw_w", pa.int16()),
        ("share_above_half", f32),
        ("base_prob", f32),
        ("explanation_prob", f32),
        ("average_drop", f32),
        ("deletion_auc", f32),
        ("insertion_auc", f32),
        ("increase", pa.bool_()),
        ("deletion_curve", pa.list_(f32)),
        ("insertion_curve", pa.list_(f32)),
        ("deletion_blur_auc", f32),  # --blur-deletion; null otherwise and absent in older parts
        ("deletion_blur_curve", pa.list_(f32)),
        ("road_morf", f32),
        ("road_lerf", f32),
        ("road_combined", f32),
        ("road_morf_curve", pa.list_(f32)),
        ("road_lerf_curve", pa.list_(f32)),
        ("sparseness", f32),
        ("entropy", f32),
        ("pointing_game", f32),
        ("energy_pointing_game", f32),
        ("relevance_mass", f32),
        ("relevance_rank", f32),
    ]
    for prefix in PAIR_PREFIXES:
        fields += [(f"{prefix}{m}", f32) for m in methods]
    return pa.schema(fields)


def part_files(run_dir: str | Path) -> list[Path]:
    """The folder's part files, oldest first (mtime, then name)."""
    folder = Path(run_dir) / RESULTS
    if not folder.is_dir():
        return []
    parts = [
        p for p in folder.iterdir() if p.name.startswith(PART_PREFIX) and p.suffix == PART_SUFFIX
    ]
    return sorted(parts, key=lambda p: (p.stat().st_mtime_ns, p.name))


def write_part(
    run_dir: str | Path, prefix: str, seq: int, rows: list[dict[str, Any]], methods: Sequence[str]
) -> Path:
    """Write ``rows`` as ``results/part-<prefix>-<seq>.parquet`` atomically; returns the path."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(run_dir) / RESULTS / part_name(prefix, seq)
    table = pa.Table.from_pylist(rows, schema=table_schema(methods))
    with atomic_open(path, "wb") as fh:
        pq.write_table(table, fh, compression="zstd")
    return path


def _read_part(path: Path, columns: Sequence[str] | None) -> Any:
    import pyarrow.parquet as pq

    try:
        if columns is None:
            return pq.read_table(path)
        names = set(pq.read_schema(path).names)
        return pq.read_table(path, columns=[c for c in columns if c in names])
    except Exception as exc:  # noqa: BLE001 - any damage: one line naming the file
        raise RunFolderError(f"{path}: cannot read results part ({_cause(exc)})") from exc


def _cause(exc: BaseException) -> str:
    return one_line(exc, 200, typed=True)


def _keep_rows(
    key: Sequence[Any],
    name: Sequence[Any],
    obj: Sequence[Any],
    method: Sequence[Any],
    status: Sequence[Any],
) -> list[int]:
    """Indices kept by the de-duplication rule (last row per (key, name, object, method) wins)."""
    last: dict[tuple[Any, Any, Any, Any], int] = {}
    for i, ident in enumerate(zip(key, name, obj, method, strict=True)):
        last[ident] = i
    ok = {(key[i], name[i]) for i in last.values() if status[i] == "ok"}
    keep = [i for (k, n, _, m), i in last.items() if not (m is None and (k, n) in ok)]
    return sorted(keep)


def _identity(table: Any) -> list[list[Any]]:
    """The `IDENTITY` columns and ``status`` of ``table`` as lists (``object`` null if absent)."""
    return [
        table.column(c).to_pylist() if c in table.column_names else [None] * len(table)
        for c in (*IDENTITY, "status")
    ]


def read_table(
    run_dirs: str | Path | Iterable[str | Path], columns: Sequence[str] | None = None
) -> Any:
    """The results table of one or several run folders, de-duplicated, + a ``run_dir`` column.

    Raises:
        RunFolderError: a part file that cannot be read (one line naming it).
    """
    import pyarrow as pa

    dirs = [run_dirs] if isinstance(run_dirs, (str, Path)) else list(run_dirs)
    wanted = (
        None
        if columns is None
        else [c for c in dict.fromkeys([*columns, *IDENTITY, "status"]) if c != "run_dir"]
    )
    tables = []
    for run_dir in dirs:
        for path in part_files(run_dir):
            part = _read_part(path, wanted)
            tables.append(part.append_column("run_dir", pa.array([str(run_dir)] * len(part))))
    if not tables:
        schema = table_schema([])
        if wanted is not None:
            schema = pa.schema([f for f in schema if f.name in wanted])
        return schema.empty_table().append_column("run_dir", pa.array([], pa.string()))
    table = pa.concat_tables(tables, promote_options="default")
    key, name, obj, method, status = _identity(table)
    ident = [f"{d}\0{k}" for d, k in zip(table.column("run_dir").to_pylist(), key, strict=True)]
    table = table.take(pa.array(_keep_rows(ident, name, obj, method, status), pa.int64()))
    if wanted is not None:
        table = table.select([c for c in [*wanted, "run_dir"] if c in table.column_names])
    return table


def iter_table(
    run_dirs: str | Path | Iterable[str | Path], columns: Sequence[str]
) -> Iterator[Any]:
    """The rows of `read_table` (same rows, same order), one part file at a time.

    For columns too large to hold for every row at once (``raw``, the curves): only one part's
    rows of ``columns`` are in memory. Each yielded table has the requested columns that part
    has, plus ``run_dir``.

    Raises:
        RunFolderError: a part file that cannot be read (one line naming it).
    """
    import pyarrow as pa

    ident_cols = (*IDENTITY, "status")
    wanted = [c for c in dict.fromkeys([*columns, *ident_cols]) if c != "run_dir"]
    dirs = [run_dirs] if isinstance(run_dirs, (str, Path)) else list(run_dirs)
    for run_dir in dirs:
        parts = part_files(run_dir)
        idents = [_read_part(path, ident_cols) for path in parts]
        per_part = [_identity(t) for t in idents]
        cols = [[v for p in per_part for v in p[c]] for c in range(len(IDENTITY) + 1)]
        keep = np.asarray(_keep_rows(*cols), dtype=np.int64)
        offset = 0
        for path, ident in zip(parts, idents, strict=True):
            lo, hi = np.searchsorted(keep, [offset, offset + len(ident)])
            if hi > lo:
                part = _read_part(path, wanted).take(pa.array(keep[lo:hi] - offset))
                part = part.append_column("run_dir", pa.array([str(run_dir)] * len(part)))
                yield part.select([c for c in [*wanted, "run_dir"] if c in part.column_names])
            offset += len(ident)


def compact(run_dir: str | Path, min_parts: int = 16, rows_per_part: int = 20_000) -> list[Path]:
    """Merge the folder's part files (de-duplicated) into few, when there are ``min_parts``.

    The merged parts (``rows_per_part`` rows each, so `iter_table` stays bounded) are written
    atomically before the others are deleted, and they are the newest, so a process killed in
    between leaves duplicates that reading resolves the same way. Only call it when no writer is
    active (the end of a run, evaluation). Large runs (a part per batch) then read back in a few
    files: resume and the report stay fast.
    """
    import pyarrow.parquet as pq

    parts = part_files(run_dir)
    if len(parts) < min_parts:
        return []
    table = read_table([run_dir]).drop_columns(["run_dir"])
    stamp = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid():x}-compact"
    merged = []
    for seq, start in enumerate(range(0, max(len(table), 1), rows_per_part)):
        path = Path(run_dir) / RESULTS / part_name(stamp, seq)
        with atomic_open(path, "wb") as fh:
            pq.write_table(table.slice(start, rows_per_part), fh, compression="zstd")
        merged.append(path)
    for part in parts:
        if part not in merged:
            part.unlink(missing_ok=True)
    return merged


def metric_columns(table: Any) -> list[str]:
    """The agreement columns (``pearson__X``, ``top20_iou__X``) present in ``table``."""
    return [c for c in table.column_names if c.startswith(PAIR_PREFIXES)]


def read_run(run_dir: str | Path) -> dict[str, Any]:
    """run.json as a dict. Raises RunFolderError (one line naming the file) when unusable."""
    path = Path(run_dir) / RUN_JSON
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunFolderError(f"{path}: missing (not a camscope run folder?)") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise RunFolderError(f"{path}: cannot read run state ({_cause(exc)})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("settings"), dict):
        raise RunFolderError(f"{path}: not a {FORMAT_NAME}.json (no settings)")
    return data


def done_keys(
    run_dir: str | Path, settings_hash: str, methods: Sequence[str] | None = None
) -> set[tuple[str, str]]:
    """(key, name) of the inputs finished under ``settings_hash``: an ok row for every method."""
    if methods is None:
        methods = read_run(run_dir).get("settings", {}).get("methods", [])
    table = read_table([run_dir], columns=["settings_hash"])
    got: dict[tuple[str, str], set[str]] = {}
    for k, n, m, s, h in zip(
        *(
            table.column(c).to_pylist()
            for c in ("key", "name", "method", "status", "settings_hash")
        ),
        strict=True,
    ):
        if s == "ok" and h == settings_hash:
            got.setdefault((k, n), set()).add(m)
    need = set(methods)
    return {ident for ident, have in got.items() if need <= have}


def write_sanity(run_dir: str | Path, rows: list[dict[str, Any]]) -> Path:
    """Write the sanity check's rows (method, step, block, image, spearman, empty_randomised)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema(
        [
            ("method", pa.string()),
            ("step", pa.int32()),
            ("block", pa.string()),
            ("image", pa.string()),
            ("spearman", pa.float32()),
            ("empty_randomised", pa.bool_()),
        ]
    )
    path = Path(run_dir) / SANITY
    with atomic_open(path, "wb") as fh:
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), fh)
    return path


def read_sanity(run_dirs: str | Path | Iterable[str | Path]) -> Any:
    """sanity.parquet of each folder that has one, concatenated, + a ``run_dir`` column."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    dirs = [run_dirs] if isinstance(run_dirs, (str, Path)) else list(run_dirs)
    tables = []
    for run_dir in dirs:
        path = Path(run_dir) / SANITY
        if path.is_file():
            try:
                t = pq.read_table(path)
            except Exception as exc:  # noqa: BLE001
                raise RunFolderError(f"{path}: cannot read sanity check ({_cause(exc)})") from exc
            tables.append(t.append_column("run_dir", pa.array([str(run_dir)] * len(t))))
    if not tables:
        return pa.table({"method": pa.array([], pa.string()), "run_dir": pa.array([], pa.string())})
    return pa.concat_tables(tables, promote_options="default")


def _check_map(path: Path, size: tuple[int, int]) -> str | None:
    """None when ``path`` holds a finite float map of ``size``, else the one-line cause."""
    try:
        arr = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        return "map missing"
    except (OSError, ValueError, EOFError) as exc:
        return f"not a readable .npy map ({_cause(exc)})"
    if arr.shape != tuple(size):
        return f"map has shape {arr.shape}, expected {tuple(size)}"
    if not np.issubdtype(arr.dtype, np.floating):
        return f"map has dtype {arr.dtype}, expected float32"
    if not np.isfinite(arr).all():
        return "map has NaN or infinite values"
    return None


def check_maps(run_dir: str | Path) -> tuple[list[str], set[tuple[str, str]]]:
    """Problems with the folder's maps, and the (name, method) pairs that must not be measured.

    Checks every ok row: its feature-resolution map in the table (length, finite) and, when
    the run saved ``.npy`` maps, the file (exists, loads without pickle, shape, finite).
    """
    run_dir = Path(run_dir)
    problems: list[str] = []
    bad: set[tuple[str, str]] = set()
    settings = read_run(run_dir)["settings"]
    size = tuple(int(v) for v in settings.get("image_size", (224, 224)))
    npy = settings.get("save_maps", "both") in ("both", "npy")
    table = read_table([run_dir], columns=["raw", "raw_h", "raw_w", "object_index"])
    names = ("name", "method", "status", "raw", "raw_h", "raw_w", "object_index")
    for name, method, status, raw, h, w, index in zip(
        *(
            table.column(c).to_pylist() if c in table.column_names else [None] * len(table)
            for c in names
        ),
        strict=True,
    ):
        if status != "ok" or method is None:
            continue
        cause = None
        if raw is None or h is None or w is None or len(raw) != h * w:
            cause = "feature map in the results table has the wrong length"
        elif not all(math.isfinite(v) for v in raw):
            cause = "feature map in the results table has NaN or infinite values"
        where = f"{run_dir / RESULTS} [{name}, {method}]"
        if cause is None and npy:
            where = str(map_path(run_dir, method, name, index=index))
            cause = _check_map(Path(where), size)
        if cause is not None:
            problems.append(f"{where}: {cause}")
            bad.add((name, method))
    return problems, bad


def validate(run_dir: str | Path) -> list[str]:
    """One line per missing or damaged file of a run folder (empty: nothing found)."""
    try:
        read_run(run_dir)
    except RunFolderError as exc:
        return [str(exc)]
    if not part_files(run_dir):
        return [f"{Path(run_dir) / RESULTS}: no results part files"]
    try:
        return check_maps(run_dir)[0]
    except RunFolderError as exc:
        return [str(exc)]
