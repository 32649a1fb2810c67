"""ROAD against its forward floor at 1 and 2 threads, and what the imputation costs in flops.

For each model and thread count, in this one process: camscope's `road` (9 fractions, MoRF +
LeRF: 18 imputed images and forwards per image) and its floor (the same 18 forwards per image
through the same `InferenceEngine`, batches of 64, images already built) interleaved, the minimum
of 3 runs each, then the imputation alone. The flop columns put the two costs in the same unit:
the model's forward flops (`torch.utils.flop_counter`, the eager model, 1 image) times 18,
against the imputation's factorisation flops: for each (image, fraction) system, the sum over
the columns of its factor of (column count)^2, the flops of a Cholesky factorisation in that
order (SuperLU's LU does about twice that), summed over the 18 systems.

    python benchmarks/bench_road.py --model efficientnet_lite0 --images 4
    python benchmarks/bench_road.py --model resnet50 --images 2     # random weights
    python benchmarks/bench_road.py --device cuda                    # on a GPU

Then the two exact solvers of the imputation side by side on the same 18 systems per image:
the sparse LU on the CPU (`_solve_blocks`, what a CPU run uses) and the dense batched
multifrontal solve (`camscope.metrics.gridsolve.stencil_fill`, what a CUDA run uses) on the CPU
and, with ``--device cuda``, on the GPU; the minimum of 3 each, and their largest difference.
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_metrics import SAMPLES, floor, setup, timed  # noqa: E402

from camscope.engine import InferenceEngine  # noqa: E402
from camscope.metrics import ROAD_FRACTIONS, road, road_inputs  # noqa: E402
from camscope.metrics.gridsolve import stencil_fill  # noqa: E402
from camscope.metrics.removal import NEIGHBOUR_STENCIL, _system, removal_masks  # noqa: E402

REPEATS = 3


def forward_flops(model: torch.nn.Module, x: torch.Tensor) -> float:
    """Flops of one eager forward pass of one image."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x[:1])
    return float(counter.get_total_flops())


def factor_flops(maps: torch.Tensor) -> float:
    """Per image: sum over its 18 systems of sum_j (column count of the factor)^2."""
    from scipy.sparse.linalg import splu

    total = 0.0
    for morf in (True, False):
        removed = removal_masks(maps, ROAD_FRACTIONS, most_relevant_first=morf)
        for mask in removed.flatten(0, 1).numpy():
            a, _, _ = _system(mask[None])
            a.sort_indices()
            lu = splu(a, permc_spec="NATURAL", options={"SymmetricMode": True})
            counts = np.diff(lu.L.tocsc().indptr).astype(np.float64)
            total += float((counts**2).sum())
    return total / len(maps)


def measure(model, x, maps, targets, threads: int) -> dict[str, float]:
    """Seconds per image: ROAD, its floor (min of interleaved runs) and the imputation alone.

    The engine is built after the thread count is set (ONNX Runtime takes it at creation) and
    warmed by one pass, so both timings see the same compiled model and threads.
    """
    torch.set_num_threads(threads)
    engine = InferenceEngine(model)
    engine.prepare(x, expected_passes=10_000)  # compiled (ONNX Runtime here), as --metrics
    n, passes = len(x), 2 * len(x) * len(ROAD_FRACTIONS)
    g = [torch.Generator().manual_seed(i) for i in range(n)]
    runs = [
        (timed(lambda: road(engine, x, maps, targets, generator=g))[0], floor(engine, x, passes))
        for _ in range(REPEATS)
    ]
    imp = min(
        timed(
            lambda: [
                road_inputs(x, maps, most_relevant_first=o, generator=g) for o in (True, False)
            ]
        )[0]
        for _ in range(REPEATS)
    )
    t_road, t_floor = min(r[0] for r in runs), min(r[1] for r in runs)
    return {"road": t_road / n, "floor": t_floor / n, "imputation": imp / n}


def solvers(x: torch.Tensor, maps: torch.Tensor, device: str) -> list[tuple[str, float]]:
    """Seconds per image of the imputation's exact solve: sparse LU (CPU), dense (CPU, device)."""
    from camscope.metrics import noisy_linear_impute

    removed = (
        torch.cat(
            [removal_masks(maps, ROAD_FRACTIONS, most_relevant_first=m) for m in (True, False)], 1
        )
        .flatten(0, 1)
        .cpu()
    )
    images = x.double().repeat_interleave(2 * len(ROAD_FRACTIONS), 0).cpu()
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def dense(dev: str):
        out = stencil_fill(images.to(dev), removed.to(dev), NEIGHBOUR_STENCIL)
        sync()
        return out.cpu()

    sparse = min(timed(lambda: noisy_linear_impute(images, removed, noise=0)) for _ in range(3))
    rows = [("sparse LU (scipy SuperLU), cpu", sparse[0] / len(x), sparse[1])]
    for dev in dict.fromkeys(("cpu", device)):
        dense(dev)  # warm: the plan is built once per size, kernels load
        best = min(timed(lambda d=dev: dense(d)) for _ in range(3))
        rows.append((f"dense multifrontal, {dev}", best[0] / len(x), best[1]))
    return [(name, t, float((out - sparse[1]).abs().max())) for name, t, out in rows]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--folder", type=Path, default=SAMPLES)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (then one thread count)")
    args = ap.parse_args()
    model, _, _, x, maps, targets, source = setup(args.model, args.images, args.folder)
    dev = args.device
    model, x, maps, targets = model.to(dev), x.to(dev), maps.to(dev), targets.to(dev)
    f_fwd = forward_flops(model, x) * 2 * len(ROAD_FRACTIONS)
    f_fac = factor_flops(maps.cpu())
    cpu = platform.processor() or platform.machine()
    probe = InferenceEngine(model)
    probe.prepare(x, expected_passes=10_000)
    print(f"{args.model} ({source}), {len(x)} images, {cpu}, engine: {probe.kind}")
    print(f"GFLOP per image: 18 forwards {f_fwd / 1e9:.2f}, 18 factorisations {f_fac / 1e9:.2f}")
    print("| threads | ROAD s / image | floor s / image | ratio | imputation s / image |")
    print("| --- | --- | --- | --- | --- |")
    for threads in (1, 2) if dev == "cpu" else (torch.get_num_threads(),):
        m = measure(model, x, maps, targets, threads)
        print(
            f"| {threads} | {m['road']:.3f} | {m['floor']:.3f} | {m['road'] / m['floor']:.2f} "
            f"| {m['imputation']:.3f} |"
        )
    print("| exact solver of the imputation | s / image | max difference to sparse LU |")
    print("| --- | --- | --- |")
    for name, seconds, diff in solvers(x, maps, dev):
        print(f"| {name} | {seconds:.3f} | {diff:.1e} |")


if __name__ == "__main__":
    main()
