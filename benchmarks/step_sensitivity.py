"""How much do deletion/insertion AUCs move with the number of steps?

Takes a `camscope run` folder (maps saved as .npy), computes every map's deletion and insertion
curve at RISE's fine resolution (224 pixels per step, i.e. 224 steps at 224x224) and at each of
``--steps``, and prints per method and step count the mean and maximum ``|AUC(steps) -
AUC(fine)|`` plus the change of each *difference between methods* (what the ranking rests on).

    python benchmarks/step_sensitivity.py RUN_DIR --steps 20,25,30,50 [--limit 20] [--json F]
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from camscope import io as imageio
from camscope.engine import InferenceEngine
from camscope.metrics import auc, deletion_curve, insertion_curve, target_probabilities
from camscope.models import load_model


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--steps", default="20,25,30,50")
    parser.add_argument("--limit", type=int, default=None, help="first N images only")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--json", type=Path, default=None)
    return parser.parse_args()


def load_run(args: argparse.Namespace):
    """The run's images, targets and saved maps (first ``--limit`` rows) and its model."""
    run = json.loads((args.run_dir / "run.json").read_text())
    with (args.run_dir / "predictions.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))[: args.limit]
    loaded = load_model(run["model"], weights=run.get("weights_file"))
    size = tuple(run["image_size"])
    methods = run["methods"]
    images, targets, maps = [], [], {m: [] for m in methods}
    for row in rows:
        path = Path(row["file"])
        if not path.is_absolute():
            path = args.run_dir / path
        images.append(
            imageio.preprocess(
                imageio.load_image(path), size=size, mean=loaded.mean, std=loaded.std
            )[1]
        )
        targets.append(int(row["target_index"]))
        for m in methods:
            maps[m].append(torch.from_numpy(np.load(args.run_dir / m / f"{row['name']}.npy")))
    inputs = torch.stack(images)
    target = torch.tensor(targets)
    return rows, loaded, size, methods, inputs, target, maps


def compute_aucs(engine, inputs, target, maps, methods, steps, batch_size, base):
    """Deletion and insertion AUC of every map, keyed by (method, metric, steps)."""
    t0 = time.perf_counter()
    aucs: dict[tuple[str, str, int], torch.Tensor] = {}
    for m in methods:
        stacked = torch.stack(maps[m]).float()
        for name, fn in (("deletion", deletion_curve), ("insertion", insertion_curve)):
            for s in steps:
                curve = fn(
                    engine,
                    inputs,
                    stacked,
                    target,
                    steps=s,
                    batch_size=batch_size,
                    base_prob=base,
                )
                aucs[(m, name, s)] = auc(curve).double()
        print(f"{m} done ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    return aucs


def report_per_method(aucs, methods, step_list, fine, out_rows: list) -> None:
    print("metric     method        steps  mean|dAUC|  max|dAUC|")
    for name in ("deletion", "insertion"):
        for m in methods:
            for s in step_list:
                d = (aucs[(m, name, s)] - aucs[(m, name, fine)]).abs()
                print(f"{name:10} {m:13} {s:5}  {d.mean():.4f}      {d.max():.4f}")
                out_rows.append(
                    {
                        "metric": name,
                        "method": m,
                        "steps": s,
                        "mean_abs": float(d.mean()),
                        "max_abs": float(d.max()),
                    }
                )


def report_pairs(aucs, methods, step_list, fine, out_rows: list) -> None:
    print("change of the mean paired difference between methods (coarse - fine):")
    for name in ("deletion", "insertion"):
        for a, b in itertools.combinations(methods, 2):
            diff_fine = (aucs[(a, name, fine)] - aucs[(b, name, fine)]).mean()
            for s in step_list:
                diff = (aucs[(a, name, s)] - aucs[(b, name, s)]).mean()
                print(f"{name:10} {a}-{b} steps {s}: {diff:+.4f} vs fine {diff_fine:+.4f}")
                out_rows.append(
                    {
                        "metric": name,
                        "pair": f"{a}-{b}",
                        "steps": s,
                        "mean_diff": float(diff),
                        "mean_diff_fine": float(diff_fine),
                    }
                )


def main() -> int:
    args = parse_args()
    step_list = [int(s) for s in args.steps.split(",")]
    rows, loaded, size, methods, inputs, target, maps = load_run(args)
    engine = InferenceEngine(loaded.model)
    fine = math.ceil(size[0] * size[1] / 224)
    engine.prepare(inputs[: args.batch_size], expected_passes=10**6)
    base = target_probabilities(engine, inputs, target, batch_size=args.batch_size)
    aucs = compute_aucs(
        engine, inputs, target, maps, methods, [fine, *step_list], args.batch_size, base
    )

    result = {"images": len(rows), "fine_steps": fine, "engine": engine.kind, "rows": []}
    print(f"{len(rows)} images, fine = {fine} steps ({engine.kind})")
    report_per_method(aucs, methods, step_list, fine, result["rows"])
    report_pairs(aucs, methods, step_list, fine, result["rows"])
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
