"""Stage 5, finalize: files derived from the results table, the sanity check, run.json.

Each output is written on its own: a failure (disk full, a folder where a file should be) is
one problem line naming the file, and the other outputs are still written. Everything comes
from the table (`camscope.run.results`), read column by column, so memory follows the number
of rows of a few scalar columns, never the images or maps.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from camscope.errors import one_line
from camscope.io import iter_images, runfolder, write_csv
from camscope.metrics import sanity_check
from camscope.run import _methods
from camscope.run.config import RunContext
from camscope.run.folder import remove_temporaries, write_run_json

__all__ = ["Finalized", "finalize", "sanity_rows", "write_metrics_csv", "write_predictions"]

log = logging.getLogger("camscope")


@dataclass
class Finalized:
    """Files written at the end, and one line per file that could not be."""

    files: dict[str, Path] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    state: str = "complete"


def _columns(table: Any, names: list[str]) -> dict[str, list[Any]]:
    return {c: table.column(c).to_pylist() for c in names if c in table.column_names}


def write_predictions(run_dir: Path, categories: list[str]) -> Path:
    """predictions.csv: one row per explained image (top-5, target, truth, empty maps)."""
    table = runfolder.read_table(
        [run_dir],
        columns=[
            "file",
            "top5_index",
            "top5_prob",
            "target_index",
            "target_name",
            "truth_index",
            "empty",
        ],
    )
    cols = _columns(table, table.column_names)
    by_name: dict[str, dict[str, Any]] = {}
    for i, name in enumerate(cols["name"]):
        if cols["status"][i] != "ok":
            continue
        entry = by_name.setdefault(name, {"i": i, "empty": []})
        if cols["empty"][i]:
            entry["empty"].append(cols["method"][i])
    header = ["name", "file"]
    for k in range(1, 6):
        header += [f"top{k}_index", f"top{k}_name", f"top{k}_prob"]
    header += ["target_index", "target_name", "truth_index", "empty_maps"]
    rows = []
    for name in sorted(by_name):
        i = by_name[name]["i"]
        row: list[Any] = [name, cols["file"][i]]
        for idx, prob in zip(cols["top5_index"][i], cols["top5_prob"][i], strict=True):
            row += [idx, categories[idx] if 0 <= idx < len(categories) else idx, f"{prob:.6f}"]
        truth = cols["truth_index"][i]
        row += [
            cols["target_index"][i],
            cols["target_name"][i],
            "" if truth is None else truth,
            ";".join(by_name[name]["empty"]),
        ]
        rows.append(row)
    path = run_dir / runfolder.PREDICTIONS_CSV
    write_csv(path, header, rows)
    return path


OBJECT_COLUMNS = ("object_index", "object", "target_index", "target_name", "object_score", "box")


def write_object_predictions(run_dir: Path) -> Path:
    """predictions.csv of a per-object task: one row per image x object (label, score, box)."""
    table = runfolder.read_table([run_dir], columns=["file", *OBJECT_COLUMNS, "empty"])
    cols = _columns(table, table.column_names)
    found: dict[tuple[str, int], dict[str, Any]] = {}
    for i, name in enumerate(cols["name"]):
        if cols["status"][i] != "ok":
            continue
        entry = found.setdefault((name, cols["object_index"][i]), {"i": i, "empty": []})
        if cols["empty"][i]:
            entry["empty"].append(cols["method"][i])
    header = ["name", "file", "object_index", "object", "label", "label_name", "score"]
    header += ["x1", "y1", "x2", "y2", "empty_maps"]
    rows = []
    for ident in sorted(found):
        i = found[ident]["i"]
        box = cols["box"][i] or [""] * 4
        score = cols["object_score"][i]
        rows.append(
            [ident[0], cols["file"][i], *(cols[c][i] for c in OBJECT_COLUMNS[:4])]
            + ["" if score is None else f"{score:.6f}"]
            + [v if v == "" else f"{v:.1f}" for v in box]
            + [";".join(found[ident]["empty"])]
        )
    path = run_dir / runfolder.PREDICTIONS_CSV
    write_csv(path, header, rows)
    return path


#: A finished run with this many part files or more gets them merged (`runfolder.compact`).
COMPACT_FROM = 16

METRIC_CSV = (
    "base_prob",
    "explanation_prob",
    "average_drop",
    "increase",
    "deletion_auc",
    "insertion_auc",
    "road_morf",
    "road_lerf",
    "road_combined",
    "sparseness",
    "entropy",
    "pointing_game",
    "energy_pointing_game",
    "relevance_mass",
    "relevance_rank",
)
#: metrics.csv columns written only when some row has a value (a run with --blur-deletion), so
#: the file of every other run keeps its columns.
MEASURED_CSV = ("deletion_blur_auc",)


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return int(value)
    return f"{value:.6g}" if isinstance(value, float) else value


def write_metrics_csv(run_dir: Path, methods: list[str], objects: bool = False) -> Path:
    """metrics.csv: one row per image (x object) x method with its metrics and agreement."""
    base = [
        "file",
        "method",
        *(("object_index", "object") if objects else ()),
        "target_index",
        "target_name",
        "top1_index",
        "truth_index",
        "empty",
        "share_above_half",
        *METRIC_CSV,
    ]
    pairs = [f"{p}{m}" for p in runfolder.PAIR_PREFIXES for m in methods]
    table = runfolder.read_table([run_dir], columns=[*base, *MEASURED_CSV, *pairs])
    cols = _columns(table, table.column_names)
    measured = [c for c in MEASURED_CSV if any(v is not None for v in cols.get(c, ()))]
    header = ["name", *base, *measured, *[c for c in pairs if c in cols]]
    ok = (cols["name"], cols["method"], cols["status"])
    index = cols.get("object_index") or [None] * len(cols["name"])
    order = sorted(
        (n, -1 if k is None else k, m, i)
        for i, (n, m, s, k) in enumerate(zip(*ok, index, strict=True))
        if s == "ok"
    )
    rows = [[_cell(cols[c][i]) if c in cols else "" for c in header] for *_, i in order]
    path = run_dir / runfolder.METRICS_CSV
    write_csv(path, header, rows)
    return path


def _sample(ctx: RunContext) -> tuple[list[str], torch.Tensor] | None:
    """The sanity check's own sample: the first N explained images by name, decoded again."""
    n = ctx.config.sanity_images
    table = runfolder.read_table([ctx.out_dir], columns=["file"])
    ok = sorted(
        {
            (nm, f)
            for nm, f, s in zip(
                *(table.column(c).to_pylist() for c in ("name", "file", "status")), strict=True
            )
            if s == "ok"
        }
    )[:n]
    if not ok:
        return None
    loaded = ctx.loaded
    decoded = list(
        iter_images(
            [runfolder.unescape_path(f) for _, f in ok],
            size=loaded.input_size,
            mean=loaded.mean,
            std=loaded.std,
        )
    )
    keep = [(nm, d.tensor) for (nm, _), d in zip(ok, decoded, strict=True) if d.error is None]
    if not keep:
        return None
    return [k for k, _ in keep], torch.stack([t for _, t in keep]).to(ctx.device)


def sanity_rows(ctx: RunContext, stop: threading.Event | None = None) -> list[dict[str, Any]]:
    """Cascading randomisation (Adebayo et al. 2018) of each method on the run's own sample."""
    sample = _sample(ctx)
    if sample is None:
        return []
    names, x = sample
    with torch.no_grad():
        if ctx.target is None:
            targets = ctx.loaded.model(x).argmax(dim=1)
        elif callable(ctx.target):  # a --target module:function, for every image
            targets = [ctx.target] * len(x)
        else:
            targets = torch.full((len(x),), ctx.target, dtype=torch.long, device=x.device)
    rows: list[dict[str, Any]] = []
    for method in ctx.methods:
        if stop is not None and stop.is_set():
            break
        start = time.perf_counter()
        options = _methods.sanity_options(method, ctx.options[method])

        def explain(
            model: torch.nn.Module,
            inputs: torch.Tensor,
            tg: torch.Tensor,
            _m: str = method,
            _o: dict = options,
        ) -> torch.Tensor:
            with _methods.build(_m, model, ctx.layer, _o) as cam:
                return cam(inputs, tg)

        for k, step in enumerate(sanity_check(ctx.loaded.model, explain, x, targets), 1):
            empty = [False] * len(names) if step.empty is None else step.empty.tolist()
            rows += [
                {
                    "method": method,
                    "step": k,
                    "block": step.block,
                    "image": name,
                    "spearman": float(step.spearman[j]),
                    "empty_randomised": bool(empty[j]),
                }
                for j, name in enumerate(names)
            ]
        log.info(
            "sanity check: %s on %d image(s) (%.1f s)",
            method,
            len(names),
            time.perf_counter() - start,
        )
    return rows


def _predictions(ctx: RunContext, run_dir: Path) -> Path:
    """predictions.csv: per image (classification) or per object (a per-object task)."""
    if ctx.params is None:
        return write_predictions(run_dir, ctx.loaded.categories)
    return write_object_predictions(run_dir)


def _attempt(out: Finalized, name: str, path: Path, fn: Callable[[], Any]) -> None:
    start = time.perf_counter()
    try:
        fn()
        out.files[name] = path
        log.info("%s", f"write {name} ({time.perf_counter() - start:.1f} s)")
    except Exception as exc:  # noqa: BLE001 - one output failing must not lose the others
        cause = getattr(exc, "strerror", None) or one_line(exc)
        line = f"{runfolder.escape_path(path)}: cannot write ({cause})"
        log.error("%s", line)
        out.problems.append(line)


def build_report(run_dirs: list[Path], out_dir: Path) -> dict[str, Path]:
    """The report of one or several run folders (`camscope.report.build_report`)."""
    from camscope.report import build_report as build

    return build(run_dirs, out_dir)


def finalize(
    ctx: RunContext,
    record: dict[str, Any],
    *,
    state: str,
    stop: threading.Event | None = None,
    changed: bool = True,
) -> Finalized:
    """Write the run's tables and report, then run.json with ``record`` and ``state``.

    The tables are predictions.csv, metrics.csv and sanity.parquet; the report is written when
    the run has metrics and was not interrupted.

    ``changed`` False (a resumed run that found nothing to do) keeps an existing sanity check
    and report instead of computing them again. A Ctrl-C (``stop``) during the sanity check
    makes the state ``interrupted``, without a report.
    """
    out, run_dir = Finalized(), ctx.out_dir
    started = time.perf_counter()
    remove_temporaries(run_dir)  # left by a killed writer (e.g. a Ray actor stopped mid-write)
    if len(runfolder.part_files(run_dir)) >= COMPACT_FROM:
        _attempt(
            out,
            runfolder.RESULTS,
            run_dir / runfolder.RESULTS,
            lambda: runfolder.compact(run_dir, COMPACT_FROM),
        )
    _attempt(
        out,
        runfolder.PREDICTIONS_CSV,
        run_dir / runfolder.PREDICTIONS_CSV,
        lambda: _predictions(ctx, run_dir),
    )
    if ctx.config.metrics and state == "complete":
        _attempt(
            out,
            runfolder.METRICS_CSV,
            run_dir / runfolder.METRICS_CSV,
            lambda: write_metrics_csv(run_dir, ctx.methods, ctx.params is not None),
        )
        sanity = run_dir / runfolder.SANITY
        sample = ctx.config.sanity_images if ctx.params is None else 0  # classifiers only
        if sample and (changed or not sanity.is_file()):
            _attempt(
                out,
                runfolder.SANITY,
                sanity,
                lambda: runfolder.write_sanity(run_dir, sanity_rows(ctx, stop)),
            )
        if stop is not None and stop.is_set():
            state = "interrupted"
        elif changed or not (run_dir / runfolder.REPORT_HTML).is_file():
            _attempt(
                out,
                runfolder.REPORT_HTML,
                run_dir / runfolder.REPORT_HTML,
                lambda: out.files.update(build_report([run_dir], run_dir)),
            )
    out.state = state
    record = {**record, "state": state}
    record.setdefault("seconds", {})["finalize"] = round(time.perf_counter() - started, 2)
    record["problems"] = list(record.get("problems", [])) + out.problems
    problem = write_run_json(run_dir, record)
    if problem is not None:
        log.error("%s", problem)
        out.problems.append(problem)
    else:
        out.files[runfolder.RUN_JSON] = run_dir / runfolder.RUN_JSON
    return out
