"""Synthetic run folders in the results-table schema of docs/DESIGN.md (tests and benchmarks).

`make_run` writes ``run.json``, ``results/part-*.parquet`` (one part per ``part_rows`` images,
with the run's own writer `camscope.run.results.write_part`), optionally ``sanity.parquet``, and
a tiny PNG per image as its input file, so a report can be built without a model.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image

from camscope.run import results


def schema(methods: list[str]) -> pa.Schema:
    """The results-table schema for a run of ``methods`` (the run's own)."""
    return results.table_schema(methods)


def _image(folder: Path, i: int, rng: np.random.Generator) -> Path:
    path = folder / f"img{i:05d}.png"
    Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(path)
    return path


def complexity(raw: np.ndarray) -> dict[str, float | None]:
    """Sparseness (Gini) and entropy of a map, float64, textbook formulas (None: no mass)."""
    a = np.sort(np.abs(raw.astype(np.float64)).ravel())
    if a.sum() == 0:
        return {"sparseness": None, "entropy": None}
    k = np.arange(1, a.size + 1)
    p = a[a > 0] / a.sum()
    gini = float(((2 * k - a.size - 1) * a).sum() / (a.size * a.sum()))
    return {"sparseness": gini, "entropy": float(-(p * np.log(p)).sum())}


def localisation(i: int, k: int, seed: int, shift: float) -> dict[str, float]:
    """Localisation values of method number ``k`` on image ``i`` (own stream: others unchanged)."""
    rng = np.random.default_rng([seed, i, 7, k])
    mass = float(np.clip(rng.normal(0.6 - 2 * shift * k, 0.1), 0, 1))
    return {
        "pointing_game": float(rng.random() < 0.8 - 2 * shift * k),
        "energy_pointing_game": float(np.clip(mass + rng.normal(0, 0.05), 0, 1)),
        "relevance_mass": mass,
        "relevance_rank": float(np.clip(mass - 0.1 + rng.normal(0, 0.05), 0, 1)),
    }


def shaped_curves(dele: float, ins: float, steps: int) -> dict[str, list[float]]:
    """Deletion (1 - x)^p and insertion 1 - (1 - x)^q at x = k / steps, areas ``dele`` / ``ins``.

    Each image's curves follow its own AUCs (continuous areas; the trapezoid's differ a little).
    """
    x = np.linspace(0, 1, steps + 1)
    p = 1 / np.clip(dele, 0.02, 0.98) - 1
    q = 1 / (1 - np.clip(ins, 0.02, 0.98)) - 1
    return {
        "deletion_curve": ((1 - x) ** p).tolist(),
        "insertion_curve": (1 - (1 - x) ** q).tolist(),
    }


def _rows_for(i, path, methods, rng, *, metrics, steps, empty, shift, increase, boxes,
              seed, curves) -> list[dict]:  # fmt: skip
    key = hashlib.sha256(path.read_bytes()).hexdigest()[:32]
    base = {
        "key": key, "name": path.stem, "file": str(path), "settings_hash": "abc",
        "status": "ok", "error": None,
        "top1_index": int(i % 7), "target_index": int(i % 7), "truth_index": int(i % 5),
        "top1_name": f"class {i % 7}", "target_name": f"class {i % 7}",
        "top1_prob": float(rng.uniform(0.2, 0.9)), "top5_index": [int(i % 7), 1, 2, 3, 4],
        "top5_prob": [0.5, 0.1, 0.1, 0.1, 0.1],
    }  # fmt: skip
    rows = []
    for k, m in enumerate(methods):
        is_empty = bool(empty.get(m, 0) > i)
        raw = np.zeros((7, 7), np.float32) if is_empty else rng.random((7, 7), dtype=np.float32)
        row = dict(base, method=m, empty=is_empty, seconds=0.01, raw=raw.ravel().tolist(),
                   raw_h=7, raw_w=7, share_above_half=float(rng.uniform(0, 0.5)),
                   **complexity(raw))  # fmt: skip
        if boxes(i):  # as --boxes: with or without --metrics, only for images with boxes
            row.update(localisation(i, k, seed, shift))
        if metrics:
            dele = float(np.clip(rng.normal(0.2 + shift * k, 0.05), 0, 1))
            ins = float(np.clip(rng.normal(0.6 - shift * k, 0.05), 0, 1))
            row.update(
                base_prob=0.5, explanation_prob=0.4,
                average_drop=float(np.clip(rng.normal(0.3 + shift * k, 0.1), 0, 1)),
                deletion_auc=dele, insertion_auc=ins, increase=bool(increase(i, k)),
                **shaped_curves(dele, ins, steps),
                road_morf=0.9 * dele, road_lerf=0.5 + 0.5 * ins,  # no draw: streams unchanged
                road_combined=(0.5 + 0.5 * ins - 0.9 * dele) / 2,
                road_morf_curve=(0.9 * dele * np.linspace(1.4, 0.6, 9)).tolist(),  # mean: morf
                road_lerf_curve=((0.5 + 0.5 * ins) * np.linspace(1.2, 0.8, 9)).tolist(),
            )  # fmt: skip
            if curves is not None:  # the test's own curves (and values) for image i, method k
                row.update(curves(i, k, steps))
        for other in methods:
            if other != m:
                row[f"pearson__{other}"] = float(rng.uniform(-0.2, 1.0))
                row[f"top20_iou__{other}"] = float(rng.uniform(0, 1))
        rows.append(row)
    return rows


def make_run(
    folder: Path,
    n: int,
    methods: tuple[str, ...] = ("gradcam", "ablationcam", "scorecam"),
    *,
    start: int = 0,
    metrics: bool = True,
    steps: int = 8,
    failures: int = 0,
    empty: dict[str, int] | None = None,
    shift: float = 0.05,
    increase=lambda i, k: i % 3 != 0,
    part_rows: int = 64,
    sanity: dict[str, tuple[list[float], list[bool]]] | None = None,
    images: Path | None = None,
    seed: int = 0,
    boxes=None,
    image_size: tuple[int, int] | None = (224, 224),
    curves=None,
) -> Path:
    """A run folder with images ``start .. start + n - 1`` (the same i -> the same image).

    empty: method -> the first k images get an empty map. failures: that many extra failed
    inputs. sanity: method -> (final-step Spearman per image, empty randomised per image).
    Complexity (sparseness, entropy of the raw map) is in every row, as in a run; boxes: a
    predicate of i, the images with ground-truth boxes (localisation values, better for
    earlier methods by ``2 * shift`` per method; None = a run without --boxes). With metrics,
    the deletion / insertion curves follow each row's AUCs (`shaped_curves`) and ROAD's curves
    its MoRF / LeRF; curves: (i, k, steps) -> columns that replace them (and any value) for
    image i and method number k. image_size: the model input recorded in run.json (None: not
    recorded, as a run before the report derived settings from it).
    """
    folder.mkdir(parents=True, exist_ok=True)
    images = images or folder.parent / "inputs"
    images.mkdir(parents=True, exist_ok=True)
    methods = list(methods)
    rows = []
    for i in range(start, start + n):
        path = images / f"img{i:05d}.png"
        if not path.exists():
            _image(images, i, np.random.default_rng(i))
        rng = np.random.default_rng([seed, i])  # the same image gets the same rows in any shard
        rows += _rows_for(i, path, methods, rng, metrics=metrics, steps=steps,
                          empty=empty or {}, shift=shift, increase=increase,
                          boxes=boxes or (lambda i: False), seed=seed,
                          curves=curves)  # fmt: skip
    for j in range(failures):
        rows.append({"key": f"{j:032x}", "name": f"broken{start + j}", "status": "failed",
                     "settings_hash": "abc",
                     "file": str(images / f"broken{start + j}.jpg"),
                     "error": "cannot identify image file"})  # fmt: skip
    (folder / "results").mkdir(exist_ok=True)
    per_part = part_rows * len(methods)
    for p, lo in enumerate(range(0, len(rows), per_part)):
        results.write_part(folder, f"{start:06d}", p, rows[lo : lo + per_part], methods)
    if sanity:
        srows = []
        for m, (rho, flags) in sanity.items():
            for img, (r, e) in enumerate(zip(rho, flags, strict=True)):
                for step, block in ((1, "fc"), (2, "layer4")):
                    srows.append({"method": m, "step": step, "block": block, "image": f"s{img}",
                                  "spearman": r, "empty_randomised": e})  # fmt: skip
        results.write_sanity(folder, srows)
    run = {"state": "complete", "settings": {"model": "synthetic", "layer": "layer4",
           "methods": methods, "steps": steps}, "settings_hash": "abc"}  # fmt: skip
    if boxes is not None:
        run["settings"]["boxes"] = "synthetic"
    if image_size is not None:
        run["settings"]["image_size"] = list(image_size)
    if metrics:  # as a run with ROAD records it
        run["settings"]["road"] = {
            "fractions": [round(0.1 * f, 1) for f in range(1, 10)],
            "noise": 0.01,
        }
    (folder / "run.json").write_text(json.dumps(run))
    if metrics:  # as the run's end writes it
        from camscope.run.finalize import write_metrics_csv

        write_metrics_csv(folder, methods)
    return folder
