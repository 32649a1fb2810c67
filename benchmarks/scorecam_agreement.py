"""ScoreCAM fast modes against the exact float32 map on real images.

For each image: the exact fp32 ScoreCAM map and the map of each fast mode (``bf16``, ``fp16``
autocast; ``kNNN`` = ``max_channels=NNN``), their Pearson r, max abs difference, time, and the
share of constant channels at the layer. Prints per-mode min / mean / max and writes a CSV.

    python benchmarks/scorecam_agreement.py IMAGES_DIR --n 100 --modes bf16,k128,k256 \
        --device cuda --csv out.csv

``--exact-run RUN_DIR`` takes the exact maps (and the exact seconds per image) from a finished
``camscope run`` over the same images with the default ScoreCAM (fp32, reference, all channels)
instead of recomputing them.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from camscope.io import collect_inputs, load_image, preprocess  # noqa: E402
from camscope.methods import ScoreCAM  # noqa: E402
from camscope.models import load_model  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("images")
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--every", type=int, default=1, help="take every N-th image")
    parser.add_argument("--modes", default="bf16,k128,k256")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--csv", default=None)
    parser.add_argument("--exact-run", default=None, help="camscope run folder with exact maps")
    return parser.parse_args()


def load_images(args: argparse.Namespace, loaded, device: torch.device):
    paths, _ = collect_inputs([args.images])
    paths = paths[:: args.every][: args.n]
    x = torch.stack(
        [preprocess(load_image(p), mean=loaded.mean, std=loaded.std)[1] for p in paths]
    ).to(device)
    return paths, x


def build_cams(args: argparse.Namespace, loaded, modes: list[str]) -> dict[str, ScoreCAM]:
    cams = {} if args.exact_run else {"fp32": ScoreCAM(loaded.model, loaded.default_layer)}
    for mode in modes:
        if mode.startswith("k"):
            cams[mode] = ScoreCAM(loaded.model, loaded.default_layer, max_channels=int(mode[1:]))
        else:
            cams[mode] = ScoreCAM(loaded.model, loaded.default_layer, precision=mode)
    return cams


def run_cams(cams: dict, x: torch.Tensor, batch_size: int, device: torch.device):
    maps: dict[str, list[torch.Tensor]] = {m: [] for m in cams}
    seconds = dict.fromkeys(cams, 0.0)
    constant_share: list[float] = []
    for start in range(0, len(x), batch_size):
        batch = x[start : start + batch_size]
        for mode, cam in cams.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            result = cam.explain(batch)
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds[mode] += time.perf_counter() - t0
            maps[mode].append(result.maps.cpu())
            if mode == "fp32":
                constant_share.append(result.info["constant_channels"] / result.info["channels"])
    return maps, seconds, constant_share


def load_exact_run(exact_run: str, paths, maps: dict, seconds: dict) -> list[float]:
    """Put the exact maps and seconds of a finished run into ``maps`` / ``seconds``."""
    run_dir = Path(exact_run)
    run = json.loads((run_dir / "run.json").read_text())
    if (run["precision"], run["scorecam_variant"], run["max_channels"]) != (
        "fp32",
        "reference",
        None,
    ):
        raise SystemExit(f"{run_dir}: not an exact default ScoreCAM run")
    with (run_dir / "predictions.csv").open(newline="") as fh:
        names = {Path(r["file"]).resolve(): r["name"] for r in csv.DictReader(fh)}
    exact_maps = [
        torch.from_numpy(np.load(run_dir / "scorecam" / f"{names[Path(p).resolve()]}.npy"))
        for p in paths
    ]
    maps["fp32"] = [torch.stack(exact_maps)]
    seconds["fp32"] = run["seconds_per_image"]["scorecam"] * len(paths)
    channels = run["method_counters"]["scorecam"]
    constant_share = [channels["constant_channels"] / channels["channels"]]
    print(f"# exact maps and seconds from {run_dir} (a separate process, back to back)")
    return constant_share


def compare_modes(
    modes: list[str], paths, exact: torch.Tensor, maps: dict, seconds: dict
) -> list[list]:
    rows = []
    for mode in modes:
        other = torch.cat(maps[mode]).double().flatten(1)
        a = exact - exact.mean(1, keepdim=True)
        b = other - other.mean(1, keepdim=True)
        r = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-300)
        maxabs = (exact - other).abs().amax(1)
        print(
            f"{mode}: {seconds[mode] / len(paths):.3f} s/image, speed-up "
            f"{seconds['fp32'] / seconds[mode]:.2f}x; Pearson r vs fp32 min {r.min():.4f} "
            f"mean {r.mean():.4f} max {r.max():.4f}; max abs diff max {maxabs.max():.4f}"
        )
        rows += [[p.name, mode, float(r[i]), float(maxabs[i])] for i, p in enumerate(paths)]
    return rows


def write_csv(path: str | None, rows: list[list]) -> None:
    if path:
        with open(path, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["image", "mode", "pearson_vs_fp32", "maxabs_vs_fp32"])
            writer.writerows(rows)


def main() -> None:
    args = parse_args()
    device = torch.device(args.device)
    loaded = load_model(args.model, device=device)
    paths, x = load_images(args, loaded, device)
    modes = [m for m in args.modes.split(",") if m]
    cams = build_cams(args, loaded, modes)
    maps, seconds, constant_share = run_cams(cams, x, args.batch, device)
    if args.exact_run:
        constant_share = load_exact_run(args.exact_run, paths, maps, seconds)
    exact = torch.cat(maps["fp32"]).double().flatten(1)
    print(
        f"# {args.model} {loaded.default_layer} on {len(paths)} images, device {device}, "
        f"constant channels {100 * np.mean(constant_share):.1f}% "
        f"(batches: min {100 * min(constant_share):.1f}%, max {100 * max(constant_share):.1f}%)"
    )
    print(f"fp32: {seconds['fp32'] / len(paths):.3f} s/image")
    rows = compare_modes(modes, paths, exact, maps, seconds)
    write_csv(args.csv, rows)


if __name__ == "__main__":
    main()
