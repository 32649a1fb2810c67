"""How much does a metric's ranking of the methods depend on its settings? (issue 17, item 6)

Reads a finished run made with ``--metrics`` (its table keeps every deletion, insertion and
ROAD curve) and ranks the methods by each metric under several settings:

- deletion / insertion AUC at 32 steps (the run's), 16 and 8 steps: every 2nd / 4th point of
  the run's curve, which are exactly the coarser curves (ceil(HW / 16) = 2 ceil(HW / 32) pixels
  per step when HW is a multiple of 32, as 224 x 224 is);
- deletion with a blurred baseline instead of the mean colour (``--blur``: new forward passes,
  ``camscope.metrics.deletion_curve(..., baseline="blur")``, same steps as the run);
- ROAD MoRF / LeRF / combined over all 9 fractions (the paper's), the first five (10-50 %) and
  the last five (50-90 %): means of the run's per-fraction curves.

For each metric, Kendall's tau-b between the order of the method means under the run's setting
and under each other setting, with a 95 % bootstrap interval (images resampled together:
`camscope.metrics.stats.ranking_agreement`). Prints a Markdown table.

    python benchmarks/ranking_settings.py RUN_DIR [--blur] [--images N] [--methods a,b,...]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from camscope.io import iter_images, runfolder
from camscope.methods import normalise_maps
from camscope.metrics import auc, deletion_curve
from camscope.metrics.stats import ranking_agreement
from camscope.run.config import config_from_record, prepare

ROAD_SETS = {"all 9": slice(0, 9), "10-50 %": slice(0, 5), "50-90 %": slice(4, 9)}


def _rows(run_dir: Path, methods: list[str] | None, images: int | None) -> dict:
    """method -> {image name: row} for the ok rows with metrics."""
    table = runfolder.read_table([run_dir]).drop_columns(["run_dir"]).to_pylist()
    rows = [r for r in table if r["status"] == "ok" and r.get("deletion_curve") is not None]
    names = sorted({r["name"] for r in rows})[:images]
    keep = set(names)
    out: dict[str, dict[str, dict]] = {}
    for r in rows:
        if r["name"] in keep and (methods is None or r["method"] in methods):
            out.setdefault(r["method"], {})[r["name"]] = r
    full = [m for m, by in out.items() if len(by) == len(names)]  # methods on every image
    return {m: out[m] for m in sorted(full)}, names


def _curve_settings(rows: dict, names: list[str]) -> dict[str, dict[str, dict[str, np.ndarray]]]:
    """metric -> setting -> method -> per-image values, from the stored curves."""
    out: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    for metric in ("deletion", "insertion"):
        for label, stride in (("32 steps", 1), ("16 steps", 2), ("8 steps", 4)):
            for m, by in rows.items():
                curves = torch.tensor([by[n][f"{metric}_curve"] for n in names])[:, ::stride]
                out.setdefault(metric, {}).setdefault(label, {})[m] = auc(curves).numpy()
    for m, by in rows.items():
        if by[names[0]].get("road_morf_curve") is None:
            continue
        morf = np.array([by[n]["road_morf_curve"] for n in names])
        lerf = np.array([by[n]["road_lerf_curve"] for n in names])
        for label, sl in ROAD_SETS.items():
            mo, le = morf[:, sl].mean(1), lerf[:, sl].mean(1)
            out.setdefault("road_morf", {}).setdefault(label, {})[m] = mo
            out.setdefault("road_lerf", {}).setdefault(label, {})[m] = le
            out.setdefault("road_combined", {}).setdefault(label, {})[m] = (le - mo) / 2
    return out


def _map(run_dir: Path, row: dict, size: tuple[int, int]) -> torch.Tensor:
    """The saved map of a row (.npy), else the table's raw map normalised as the run does."""
    path = runfolder.map_path(run_dir, row["method"], row["name"])
    if path.exists():
        return torch.from_numpy(np.load(path, allow_pickle=False).astype(np.float32))
    raw = torch.tensor(row["raw"], dtype=torch.float32).view(1, row["raw_h"], row["raw_w"])
    return normalise_maps(raw, size)[0][0]


def _blur_deletion(run_dir: Path, rows: dict, names: list[str]) -> dict[str, np.ndarray]:
    """method -> per-image deletion AUC with a blurred baseline (new forward passes)."""
    run = runfolder.read_run(run_dir)
    ctx = prepare(config_from_record(run, inputs=(str(run_dir),), out_dir=str(run_dir)),
                  check_folder=False)  # fmt: skip
    first = next(iter(rows.values()))
    files = [runfolder.unescape_path(first[n]["file"]) for n in names]
    lm = ctx.loaded
    x = torch.stack([im.tensor for im in iter_images(files, size=lm.input_size, mean=lm.mean,
                                                     std=lm.std)])  # fmt: skip
    targets = torch.tensor([first[n]["target_index"] for n in names])
    steps = int(run["settings"]["steps"])
    out = {}
    with torch.inference_mode():
        for m, by in rows.items():
            maps = torch.stack([_map(run_dir, by[n], lm.input_size) for n in names])
            curve = deletion_curve(lm.model, x, maps, targets, steps=steps, baseline="blur")
            out[m] = auc(curve).numpy()
    return out


def main() -> None:
    """Print, per metric, tau between the run's setting and each other setting."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--blur", action="store_true", help="also deletion with a blurred baseline")
    ap.add_argument("--images", type=int, default=None)
    ap.add_argument("--methods", default=None)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    methods = args.methods.split(",") if args.methods else None
    rows, names = _rows(args.run_dir, methods, args.images)
    settings = _curve_settings(rows, names)
    start = time.perf_counter()
    if args.blur:
        settings["deletion"]["blur baseline"] = _blur_deletion(args.run_dir, rows, names)
    seconds = time.perf_counter() - start
    lower = {"deletion", "road_morf"}
    lines = [
        f"{len(names)} images x {len(rows)} methods ({', '.join(rows)}); "
        f"blur-baseline forwards {seconds:.0f} s",
        "",
        "| metric | run's setting | other setting | Kendall tau-b | 95 % interval | n |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for metric, by_setting in settings.items():
        labels = list(by_setting)
        agree = ranking_agreement(
            {s: by_setting[s] for s in labels}, dict.fromkeys(labels, metric not in lower)
        )
        for other in labels[1:]:
            iv = agree[(labels[0], other)]
            lines.append(
                f"| {metric} | {labels[0]} | {other} | {iv.mean:.2f} | "
                f"[{iv.low:.2f}, {iv.high:.2f}] | {iv.n} |"
            )
    print("\n".join(lines))  # noqa: T201


if __name__ == "__main__":
    main()
