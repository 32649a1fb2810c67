"""How much of a ROAD number is its imputation noise? A run's maps under other noise draws.

ROAD fills the removed pixels by noisy linear imputation (noise 0.01; a run seeds each image's
noise by its content key, and every method of an image gets the same draw). This script takes a
finished ``--metrics`` run, re-measures ROAD combined for its maps under ``--draws`` other seeds
per image (each draw shared by every method, as in a run) and prints, per method: the median
over images of the standard deviation of an image's value across draws (the noise in one
image's number), the standard deviation across draws of the method's mean over the images (how
much a table's number moves with the draw) and, for scale, the standard deviation of the values
over the images; then Kendall tau-b between the methods' orders under every two draws.

    python benchmarks/road_noise.py RUN_DIR --images 10 --draws 5 [--methods a,b,...]
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ranking_settings import _map, _rows  # noqa: E402

from camscope.io import iter_images, runfolder  # noqa: E402
from camscope.metrics import road  # noqa: E402
from camscope.run.config import config_from_record, prepare  # noqa: E402


def draws_of(run_dir: Path, rows: dict, names: list[str], draws: int) -> dict[str, np.ndarray]:
    """method -> (draws, images) ROAD combined, draw d seeding image j with 1_000_003 (d+1) + j."""
    run = runfolder.read_run(run_dir)
    ctx = prepare(config_from_record(run, inputs=(str(run_dir),), out_dir=str(run_dir)),
                  check_folder=False)  # fmt: skip
    first, lm = next(iter(rows.values())), ctx.loaded
    files = [runfolder.unescape_path(first[n]["file"]) for n in names]
    x = torch.stack([im.tensor for im in iter_images(files, size=lm.input_size, mean=lm.mean,
                                                     std=lm.std)])  # fmt: skip
    targets = torch.tensor([first[n]["target_index"] for n in names])
    maps = {m: torch.stack([_map(run_dir, by[n], lm.input_size) for n in names])
            for m, by in rows.items()}  # fmt: skip
    out = {m: np.empty((draws, len(names))) for m in rows}
    with torch.inference_mode():
        for d, m in itertools.product(range(draws), rows):
            gens = [torch.Generator().manual_seed(1_000_003 * (d + 1) + j) for j in range(len(x))]
            out[m][d] = road(lm.model, x, maps[m], targets, generator=gens).combined.numpy()
    return out


def main() -> None:
    """Print the noise table and the agreement of the orders between draws."""
    from scipy.stats import kendalltau

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--images", type=int, default=10)
    ap.add_argument("--draws", type=int, default=5)
    ap.add_argument("--methods", default=None)
    args = ap.parse_args()
    methods = args.methods.split(",") if args.methods else None
    rows, names = _rows(args.run_dir, methods, args.images)
    values = draws_of(args.run_dir, rows, names, args.draws)
    print(f"ROAD combined of {len(names)} images x {args.draws} noise draws ({args.run_dir})")
    print("| method | SD across draws, one image (median) | SD across draws of the mean "
          "| SD over images |")  # fmt: skip
    print("| --- | --- | --- | --- |")
    for m, v in values.items():
        print(f"| {m} | {np.median(v.std(axis=0, ddof=1)):.4f} | "
              f"{v.mean(axis=1).std(ddof=1):.4f} | {v.mean(axis=0).std(ddof=1):.4f} |")  # fmt: skip
    means = np.stack([v.mean(axis=1) for v in values.values()], axis=1)  # (draws, methods)
    taus = [kendalltau(means[a], means[b]).statistic
            for a, b in itertools.combinations(range(args.draws), 2)]  # fmt: skip
    print(
        f"Kendall tau-b between two draws' orders of the {len(values)} methods: median "
        f"{np.median(taus):.2f}, min {min(taus):.2f} over {len(taus)} pairs of draws"
    )


if __name__ == "__main__":
    main()
