"""`camscope evaluate DIR`: add the metrics to a run made without ``--metrics``.

The folder is checked first (`runfolder.check_maps`): a missing, unreadable, wrong-shape or
non-finite map is one error line naming the file and that map is refused, never measured
(exit 1). A broken run.json or labels file is said under its own name. The images are then
decoded again batch by batch and measured by the same `BatchExplainer.metrics` as a run with
``--metrics``; the measured rows are written as new part files under the new settings (metrics
on, ``steps``), so evaluating again continues where an interrupted evaluation stopped, and the
run's files (metrics.csv, sanity check, report, run.json) are written by `finalize`.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from camscope.io import iter_images, runfolder
from camscope.methods import normalise_maps
from camscope.run.collect import WorkItem
from camscope.run.config import RunContext, UsageError, check_labels, config_from_record, prepare
from camscope.run.explainer import BatchExplainer
from camscope.run.finalize import finalize
from camscope.run.writer import session_prefix

__all__ = ["Evaluated", "evaluate_folder"]

log = logging.getLogger("camscope")
_FREE = ("metrics", "steps", "road", "blur_deletion")


@dataclass
class Evaluated:
    """Outcome of `evaluate_folder`: state, files written, one line per problem found."""

    state: str
    files: dict[str, Path] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    n_measured: int = 0


def _maps(ctx: RunContext, rows: list[dict[str, Any]]) -> torch.Tensor:
    """(B, H, W) maps of ``rows`` (one method): the saved .npy, else the table's raw map."""
    out = []
    for row in rows:
        path = runfolder.map_path(ctx.out_dir, row["method"], row["name"])
        if "npy" in ctx.save_maps:
            out.append(torch.from_numpy(np.load(path, allow_pickle=False).astype(np.float32)))
            continue
        raw = torch.tensor(row["raw"], dtype=torch.float32).view(1, row["raw_h"], row["raw_w"])
        out.append(normalise_maps(raw, ctx.loaded.input_size)[0][0])
    return torch.stack(out).to(ctx.device)


def _measure(
    ctx: RunContext,
    explainer: BatchExplainer,
    group: list[list[dict[str, Any]]],
    prefix: str,
    seq: int,
) -> tuple[int, list[str]]:
    """Measure one batch of images (each a list of rows, one per method); write a part."""
    loaded, problems = ctx.loaded, []
    decoded = list(
        iter_images(
            [runfolder.unescape_path(rows[0]["file"]) for rows in group],
            size=loaded.input_size,
            mean=loaded.mean,
            std=loaded.std,
        )
    )
    keep = []
    for rows, image in zip(group, decoded, strict=True):
        if image.error is not None:
            problems.append(f"{rows[0]['file']}: image not evaluated ({image.error.cause})")
            log.error("%s", problems[-1])
        else:
            keep.append((rows, image.tensor))
    if not keep:
        return 0, problems
    x = torch.stack([t for _, t in keep]).to(ctx.device)
    targets = torch.tensor([rows[0]["target_index"] for rows, _ in keep], device=ctx.device)
    out = []
    for m in ctx.methods:  # each method on the images that have an intact map of it
        pick = [(k, r) for k, (rows, _) in enumerate(keep) for r in rows if r["method"] == m]
        if not pick:
            continue
        idx = torch.tensor([k for k, _ in pick], device=ctx.device)
        rows_m = [r for _, r in pick]
        maps = {m: _maps(ctx, rows_m)}
        keys = [r["key"] for r in rows_m]
        measured = explainer.metrics(x[idx], maps, targets[idx], keys=keys)[m]
        items = [
            WorkItem(Path(runfolder.unescape_path(r["file"])), r["name"], r["key"]) for r in rows_m
        ]
        measured.update(explainer.per_map(items, maps)[m])  # complexity, localisation
        for j, row in enumerate(rows_m):
            new = {**row, "settings_hash": ctx.settings_hash}
            for key, value in measured.items():
                v = value[j].detach().cpu()
                new[key] = (
                    v.tolist() if v.dim() else (bool(v) if v.dtype == torch.bool else float(v))
                )
            out.append(new)
    runfolder.write_part(ctx.out_dir, prefix, seq, out, ctx.methods)
    return len(keep), problems


def _groups(
    table: Any, skip: set[tuple[str, str]], settings_hash: str, size: int
) -> list[list[list[dict[str, Any]]]]:
    images: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in table.drop_columns(["run_dir"]).to_pylist():
        if (
            row["status"] == "ok"
            and row["settings_hash"] != settings_hash
            and (row["name"], row["method"]) not in skip
        ):
            images.setdefault((row["key"], row["name"]), []).append(row)
    ordered = [images[k] for k in sorted(images, key=lambda k: k[1])]
    return [ordered[i : i + size] for i in range(0, len(ordered), size)]


def evaluate_folder(
    run_dir: str | Path,
    *,
    steps: int,
    blur_deletion: bool = False,
    labels: str | None = None,
    device: str = "auto",
    sanity_images: int = 8,
    batch_size: int = 8,
    stop: threading.Event | None = None,
) -> Evaluated:
    """Check ``run_dir``, measure every intact map not yet measured, write the report.

    ``blur_deletion``: also measure deletion with the blurred baseline (``--blur-deletion``).

    Raises:
        UsageError: bad options (steps, device, labels file) or a model that cannot be had.
    """
    run_dir = Path(run_dir)
    try:
        run = runfolder.read_run(run_dir)
        problems, bad = runfolder.check_maps(run_dir)
    except runfolder.RunFolderError as exc:
        log.error("%s", str(exc))
        return Evaluated("failed", problems=[str(exc)])
    for line in problems:
        log.error("%s", line)
    check_labels(labels)
    ctx = prepare(
        config_from_record(
            run,
            inputs=(str(run_dir),),
            out_dir=str(run_dir),
            metrics=True,
            steps=steps,
            blur_deletion=blur_deletion,
            labels=labels,
            device=device,
            sanity_images=sanity_images,
            batch_size=batch_size,
        ),
        check_folder=False,
    )
    old = {k: v for k, v in run["settings"].items() if k not in _FREE}
    new = {k: v for k, v in ctx.settings.items() if k not in _FREE}
    if old != new:
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        raise UsageError(
            f"{run_dir}: the model loaded now differs from the run's "
            f"({', '.join(diff)}); cannot evaluate its maps"
        )
    if ctx.params is not None:
        raise UsageError(
            f"{run_dir}: a --task {ctx.config.task} run is measured while it runs: run it again "
            "with --metrics into another folder"
        )
    table = runfolder.read_table([run_dir])
    explainer, prefix, n, state = BatchExplainer(ctx), f"eval-{session_prefix()}", 0, "complete"
    try:
        for seq, group in enumerate(_groups(table, bad, ctx.settings_hash, batch_size)):
            done, lines = _measure(ctx, explainer, group, prefix, seq)
            n, problems = n + done, problems + lines
            if stop is not None and stop.is_set():
                state = "interrupted"
                break
    finally:
        explainer.close()
    log.info("evaluate: %d image(s) measured (%.1f s)", n, explainer.seconds["metrics"])
    record = {
        **run,
        "settings": ctx.settings,
        "settings_hash": ctx.settings_hash,
        "problems": problems,
    }
    final = finalize(ctx, record, state=state, stop=stop)
    return Evaluated(state, final.files, problems + final.problems, n)
