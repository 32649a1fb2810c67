"""In-process run against a local Ray cluster with 1 and 2 workers, back to back, same images.

Each variant is a separate ``camscope run`` process into a fresh folder (wall time measured
around the process); afterwards the three results tables are compared row by row (largest
difference of the feature-resolution maps and of the deletion/insertion AUCs) and the
per-image method costs are read from the table's ``seconds`` column.

Example::

    python benchmarks/bench_ray.py ../shared/imagenet-samples --images 40 \\
        --model efficientnet_lite0 --methods gradcam,ablationcam --metrics
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {"in-process": [], "ray, 1 worker": ["--ray", "local", "--workers", "1"],
            "ray, 2 workers": ["--ray", "local", "--workers", "2"]}  # fmt: skip


def run(inputs: Path, out: Path, extra: list[str], args: argparse.Namespace) -> float:
    """One ``camscope run`` process; returns its wall time in seconds."""
    cmd = [sys.executable, "-m", "camscope.cli", "run", str(inputs), "--out", str(out),
           "--model", args.model, "--methods", args.methods, "--sanity-images", "0",
           "--quiet", *(["--metrics"] if args.metrics else []), *extra]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)}: exit {proc.returncode}\n{proc.stderr[-2000:]}")
    return wall


def table(out: Path) -> dict[tuple[str, str], dict]:
    from camscope.run import results

    rows = results.read_table([out]).to_pylist()
    return {(r["name"], r["method"]): r for r in rows if r["status"] == "ok"}


def compare(want: dict, have: dict) -> dict[str, float]:
    """Largest differences between two runs' tables (same rows required)."""
    if set(want) != set(have):
        raise SystemExit("the runs explained different images")
    raw = max(np.abs(np.subtract(have[k]["raw"], want[k]["raw"])).max() for k in want)
    out = {"rows": len(want), "max_raw_diff": float(raw)}
    if want[next(iter(want))].get("deletion_auc") is not None:
        out["max_auc_diff"] = max(abs(have[k][c] - want[k][c]) for k in want
                                  for c in ("deletion_auc", "insertion_auc"))  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("samples", type=Path)
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--methods", default="gradcam,ablationcam")
    parser.add_argument("--metrics", action="store_true")
    parser.add_argument("--work", type=Path, default=Path("/tmp/camscope-bench-ray"))
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    inputs = args.work / "inputs"
    inputs.mkdir(parents=True)
    images = sorted(p for p in args.samples.iterdir() if p.suffix.lower() in {".jpeg", ".jpg"})
    for src in images[: args.images]:
        shutil.copyfile(src, inputs / src.name)
    walls, tables = {}, {}
    for name, extra in VARIANTS.items():
        out = args.work / name.replace(" ", "").replace(",", "-")
        walls[name] = run(inputs, out, extra, args)
        tables[name] = table(out)
        print(json.dumps({"variant": name, "wall_s": round(walls[name], 1)}), flush=True)
    base = "in-process"
    for name, rows in tables.items():
        per_method: dict[str, float] = {}
        for (_, method), row in rows.items():
            per_method[method] = per_method.get(method, 0.0) + row["seconds"]
        n = len({k[0] for k in rows})
        print(json.dumps({
            "variant": name, "wall_s": round(walls[name], 1),
            "ratio_to_in_process": round(walls[name] / walls[base], 2),
            "images": n, "method_s_per_image": {m: round(s / n, 4) for m, s in per_method.items()},
            **({} if name == base else compare(tables[base], rows)),
        }))  # fmt: skip


if __name__ == "__main__":
    main()
