"""Bridge until `camscope.report.build_report` lands: the session-2 report from the table.

Builds a `camscope.report.ReportData` from the results table of the run folders (overlays
only for the first `GALLERY` images, no embedded inputs) and writes summary.csv, curves.png,
distributions.png, report.md and report.html with the existing renderers.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import torch

from camscope.io import save_figure, write_csv
from camscope.metrics import SanityStep
from camscope.run import results

GALLERY = 64
_KEYS = (
    "average_drop",
    "increase",
    "deletion_auc",
    "insertion_auc",
    "empty",
    "share_above_half",
    "base_prob",
    "explanation_prob",
)


def _values(cols: dict[str, list[Any]], index: dict[str, int], methods: list[str]) -> dict:
    n = len(index)
    values = {m: {k: np.full(n, np.nan) for k in _KEYS} for m in methods}
    for r, (name, method) in enumerate(zip(cols["name"], cols["method"], strict=True)):
        if method in values and cols["status"][r] == "ok":
            for k in _KEYS:
                v = cols[k][r]
                values[method][k][index[name]] = np.nan if v is None else float(v)
    return values


def build_report(run_dirs: list[Path], out_dir: Path) -> dict[str, Path]:
    """Write the report files of ``run_dirs`` into ``out_dir``; returns them by name."""
    from camscope.report import (
        ImageEntry,
        ReportData,
        plot_curves,
        plot_distributions,
        summary_table,
        write_html,
        write_markdown,
    )

    run = results.read_run(run_dirs[0])
    methods = list(run["settings"]["methods"])
    table = results.read_table(
        run_dirs,
        columns=[
            *_KEYS,
            "file",
            "target_index",
            "target_name",
            "top1_index",
            "top1_name",
            "top1_prob",
            "truth_index",
            "deletion_curve",
            "insertion_curve",
            "pearson__" + methods[0],
            "top20_iou__" + methods[0],
        ],
    )
    table = results.read_table(
        run_dirs,
        columns=[*table.column_names, *(f"{p}{m}" for p in results.PAIR_PREFIXES for m in methods)],
    )
    cols = {c: table.column(c).to_pylist() for c in table.column_names}
    first: dict[str, int] = {}
    for r, (name, status) in enumerate(zip(cols["name"], cols["status"], strict=True)):
        if status == "ok":
            first.setdefault(name, r)
    names = sorted(first)
    index = {n: i for i, n in enumerate(names)}
    images = []
    for i, name in enumerate(names):
        r = first[name]
        truth = cols["truth_index"][r]
        images.append(
            ImageEntry(
                name=name,
                file=cols["file"][r],
                target_index=cols["target_index"][r],
                target_name=cols["target_name"][r],
                top1_index=cols["top1_index"][r],
                top1_name=cols["top1_name"][r],
                top1_prob=cols["top1_prob"][r],
                truth_index=truth,
                truth_name=None if truth is None else str(truth),
                overlays={m: results.map_path(cols["run_dir"][r], m, name, "png") for m in methods}
                if i < GALLERY
                else {},
            )
        )
    values = _values(cols, index, methods)
    agreement = {}
    for a, b in itertools.combinations(methods, 2):
        pair = {k: np.full(len(names), np.nan) for k in ("pearson", "top20_iou")}
        for r, (name, method) in enumerate(zip(cols["name"], cols["method"], strict=True)):
            if method == a and cols["status"][r] == "ok":
                for k in pair:
                    v = cols.get(f"{k}__{b}", [None] * len(cols["name"]))[r]
                    pair[k][index[name]] = np.nan if v is None else v
        agreement[(a, b)] = pair
    curves = {}
    for m in methods:
        rows = [
            r
            for r, mm in enumerate(cols["method"])
            if mm == m and cols["status"][r] == "ok" and cols["deletion_curve"][r] is not None
        ]
        if rows:
            curves[m] = tuple(
                np.array([cols[k][r] for r in rows]) for k in ("deletion_curve", "insertion_curve")
            )
    sanity, sanity_n = _sanity(run_dirs)
    steps = int(run["settings"].get("steps") or 0)
    data = ReportData(
        title=f"camscope evaluation: {run.get('model', '?')} at {run.get('layer')}",
        run=run,
        methods=methods,
        images=images,
        values=values,
        agreement=agreement,
        steps=steps,
        sanity=sanity,
        sanity_images=sanity_n,
    )
    files = {
        k: Path(out_dir) / k
        for k in ("summary.csv", "curves.png", "distributions.png", "report.md", "report.html")
    }
    write_csv(files["summary.csv"], *summary_table(data))
    save_figure(files["curves.png"], plot_curves(curves))
    save_figure(files["distributions.png"], plot_distributions(values))
    data.plots = {
        "Mean deletion and insertion curves": files["curves.png"],
        "Per-image distributions": files["distributions.png"],
    }
    write_markdown(files["report.md"], data)
    write_html(files["report.html"], data)
    return files


def _sanity(run_dirs: list[Path]) -> tuple[dict[str, list[SanityStep]], int]:
    table = results.read_sanity(run_dirs)
    if not len(table) or "step" not in table.column_names:
        return {}, 0
    names = ("method", "step", "block", "spearman", "image", "empty_randomised")
    cols = {c: table.column(c).to_pylist() for c in names}
    groups: dict[tuple[str, int], tuple[str, list[float], list[bool]]] = {}
    for m, k, b, s, e in zip(*(cols[c] for c in names if c != "image"), strict=True):
        group = groups.setdefault((m, k), (b, [], []))
        group[1].append(s)
        group[2].append(bool(e))
    out: dict[str, list[SanityStep]] = {}
    for (m, _k), (block, vals, empty) in sorted(groups.items()):
        step = SanityStep.from_values(block, torch.tensor(vals), 0, 0, torch.tensor(empty))
        out.setdefault(m, []).append(step)
    return out, len(set(cols["image"]))
