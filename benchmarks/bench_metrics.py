"""Time the metrics: camscope against Quantus and pytorch-grad-cam, with the forward floor beside.

Same model, images, Grad-CAM maps and targets for every library, in this one process, back to
back, one thread. For each perturbation metric the *floor* is the same number of forward passes
camscope's metric makes, run through the same `InferenceEngine` in batches of 64 on images that
are already built: what the metric would cost if perturbing, imputing and bookkeeping were free.
``ratio`` = seconds / floor seconds. Quantus and pytorch-grad-cam get the eager model (their
API takes an ``nn.Module``); camscope gets the engine, as ``--metrics`` does.

Rows:

* Deletion, 32 steps: camscope `deletion_curve`; Quantus `PixelFlipping` with the same pixels per
  step (``features_in_step = H*W/32``, mean baseline) — the same number of forwards.
* Average Drop: camscope `average_drop_increase`; pytorch-grad-cam `DropInConfidence`.
* ROAD, 9 fractions x MoRF + LeRF: camscope `road` (and its imputation alone); pytorch-grad-cam
  `ROADCombined`; Quantus `ROAD` (raises IndexError on such maps: recorded as such).
* No forward pass: pointing game, relevance mass / rank, sparseness, entropy against Quantus.

Also the cost of each ``--metrics`` column per image and method on this engine. camscope's
deletion and Average Drop and their floors are each the minimum of 3 interleaved runs (a shared
machine); the other rows are single runs.

    python benchmarks/bench_metrics.py --model efficientnet_lite0 --images 4
    python benchmarks/bench_metrics.py --model resnet50 --images 2     # random weights
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from camscope import GradCAM  # noqa: E402
from camscope.engine import InferenceEngine  # noqa: E402
from camscope.io import preprocess  # noqa: E402
from camscope.metrics import (  # noqa: E402
    ROAD_FRACTIONS,
    average_drop_increase,
    deletion_curve,
    entropy,
    insertion_curve,
    pointing_game,
    relevance_mass,
    relevance_rank,
    road,
    road_inputs,
    sparseness,
    target_probabilities,
)
from camscope.models import load_model  # noqa: E402

SAMPLES = Path("/work/shared/imagenet-samples")


def setup(name: str, n: int, folder: Path):
    if name == "efficientnet_lite0":
        loaded = load_model(name)
        model, mean, std, layer = loaded.model, loaded.mean, loaded.std, loaded.default_layer
        source = loaded.weights_source
    else:
        import torchvision

        torch.manual_seed(0)
        model = torchvision.models.get_model(name, weights=None).eval()
        mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
        layer, source = "layer4", "random init (seed 0)"
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpeg", ".jpg"))[:n]
    from PIL import Image

    x = torch.stack([preprocess(Image.open(f), mean=mean, std=std)[1] for f in files])
    with torch.no_grad():
        targets = model(x).argmax(1)
    maps = torch.as_tensor(GradCAM(model, target_layers=layer)(x, targets=targets))
    return model, mean, std, x, maps, targets, source


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


REPEATS = 3


def paired(fn, engine, x, passes: int) -> tuple[float, float]:
    """(metric seconds, floor seconds), each the minimum of `REPEATS` interleaved runs.

    Interleaving metric and floor runs exposes both to the same load of a shared machine.
    """
    runs = [(timed(fn)[0], floor(engine, x, passes)) for _ in range(REPEATS)]
    return min(r[0] for r in runs), min(r[1] for r in runs)


def floor(engine, x, passes: int) -> float:
    """Seconds of ``passes`` forwards (batches of 64) of ready-made images through ``engine``."""
    batch = x.repeat((64 + len(x) - 1) // len(x), 1, 1, 1)[:64]
    start = time.perf_counter()
    done = 0
    while done < passes:
        k = min(64, passes - done)
        engine(batch[:k])
        done += k
    return time.perf_counter() - start


def quantus_kwargs(x, maps, targets, regions=None):
    kw = {
        "x_batch": x.numpy(),
        "y_batch": targets.numpy(),
        "a_batch": maps[:, None].numpy(),
        "device": "cpu",
    }
    if regions is not None:
        kw["s_batch"] = regions[:, None].float().numpy()
    return kw


def perturbation_rows(model, engine, x, maps, targets, mean, std, steps):
    n, (h, w) = len(x), x.shape[-2:]
    base = target_probabilities(engine, x, targets)
    rows = []
    passes = n * steps
    t, fl = paired(
        lambda: deletion_curve(engine, x, maps, targets, steps=steps, base_prob=base),
        engine,
        x,
        passes,
    )
    rows.append(("Deletion (32 steps)", "camscope", t, passes, fl))
    try:
        import quantus

        metric = quantus.PixelFlipping(
            features_in_step=h * w // steps,
            perturb_baseline="mean",
            normalise=False,
            disable_warnings=True,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t, _ = timed(lambda: metric(model=model, **quantus_kwargs(x, maps, targets)))
        rows.append(("Deletion (32 steps)", "Quantus PixelFlipping", t, passes, rows[-1][4]))
    except ImportError:
        rows.append(("Deletion (32 steps)", "Quantus (not installed)", float("nan"), passes, 0))
    t, fl = paired(
        lambda: average_drop_increase(engine, x, maps, targets, mean=mean, std=std, base_prob=base),
        engine,
        x,
        n,
    )
    rows.append(("Average Drop", "camscope", t, n, fl))
    from pytorch_grad_cam.metrics.cam_mult_image import DropInConfidence
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    pgc_targets = [ClassifierOutputTarget(int(c)) for c in targets]
    t, _ = timed(lambda: DropInConfidence()(x, maps.numpy(), pgc_targets, model))
    rows.append(("Average Drop", "pytorch-grad-cam DropInConfidence", t, 2 * n, rows[-1][4]))
    return rows + road_rows(model, engine, x, maps, targets, pgc_targets)


def road_rows(model, engine, x, maps, targets, pgc_targets):
    n, f = len(x), len(ROAD_FRACTIONS)
    passes = 2 * n * f
    g = [torch.Generator().manual_seed(i) for i in range(n)]
    t, _ = timed(lambda: road(engine, x, maps, targets, generator=g))
    fl = floor(engine, x, passes)
    rows = [("ROAD (9 fractions, MoRF + LeRF)", "camscope", t, passes, fl)]
    t_imp, _ = timed(
        lambda: [road_inputs(x, maps, most_relevant_first=o, generator=g) for o in (True, False)]
    )
    rows.append(("ROAD (9 fractions, MoRF + LeRF)", "camscope: imputation alone", t_imp, 0, fl))
    from pytorch_grad_cam.metrics.road import ROADCombined

    t, _ = timed(lambda: ROADCombined()(x, maps.numpy(), pgc_targets, model))
    rows.append(
        ("ROAD (9 fractions, MoRF + LeRF)", "pytorch-grad-cam ROADCombined", t, 4 * n * f, fl)
    )
    try:
        import quantus

        metric = quantus.ROAD(percentages=[10 * k for k in range(1, 10)], disable_warnings=True)
        try:
            t, _ = timed(lambda: metric(model=model, **quantus_kwargs(x, maps, targets)))
            label = "Quantus ROAD"
        except IndexError:
            t, label = float("nan"), "Quantus ROAD: IndexError"
        rows.append(("ROAD (9 fractions, MoRF + LeRF)", label, t, passes, fl))
    except ImportError:
        pass
    return rows


def free_rows(x, maps, targets):
    """Metrics without forward passes: camscope against Quantus, seconds for all the maps."""
    h, w = maps.shape[-2:]
    regions = torch.zeros_like(maps, dtype=torch.bool)
    regions[:, h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = True
    ours = {
        "pointing game": lambda: pointing_game(maps, regions),
        "relevance mass": lambda: relevance_mass(maps, regions),
        "relevance rank": lambda: relevance_rank(maps, regions),
        "sparseness": lambda: sparseness(maps),
        "entropy": lambda: entropy(maps),
    }
    rows = []
    try:
        import quantus

        kw = {"disable_warnings": True, "normalise": False}
        theirs = {
            "pointing game": quantus.PointingGame(**kw),
            "relevance mass": quantus.RelevanceMassAccuracy(**kw),
            "relevance rank": quantus.RelevanceRankAccuracy(**kw),
            "sparseness": quantus.Sparseness(abs=True, **kw),
            "entropy": quantus.Complexity(abs=True, **kw),
        }
    except ImportError:
        theirs = {}
    for name, fn in ours.items():
        t, _ = timed(fn)
        q = float("nan")
        if name in theirs:
            q, _ = timed(
                lambda m=theirs[name]: m(model=None, **quantus_kwargs(x, maps, targets, regions))
            )
        rows.append((name, t, q))
    return rows


def metrics_cost(engine, x, maps, targets, mean, std, steps):
    """Seconds per image and method of each --metrics column group (this engine)."""
    n = len(x)
    base = target_probabilities(engine, x, targets)
    g = [torch.Generator().manual_seed(i) for i in range(n)]
    jobs = {
        "base probability (shared by the methods)": lambda: target_probabilities(
            engine, x, targets
        ),
        "Average Drop / Increase": lambda: average_drop_increase(
            engine, x, maps, targets, mean=mean, std=std, base_prob=base
        ),
        f"Deletion ({steps} steps)": lambda: deletion_curve(
            engine, x, maps, targets, steps=steps, base_prob=base
        ),
        f"Insertion ({steps} steps)": lambda: insertion_curve(
            engine, x, maps, targets, steps=steps, base_prob=base
        ),
        "ROAD (9 fractions x 2)": lambda: road(engine, x, maps, targets, generator=g),
        "sparseness + entropy": lambda: (sparseness(maps), entropy(maps)),
    }
    return [(name, timed(fn)[0] / n) for name, fn in jobs.items()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--folder", type=Path, default=SAMPLES)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, mean, std, x, maps, targets, source = setup(args.model, args.images, args.folder)
    engine = InferenceEngine(model)
    engine.prepare(x, expected_passes=10_000)
    floor(engine, x, 64)  # warm-up
    n = len(x)
    print(
        f"{args.model} ({source}), {n} images 224x224, Grad-CAM maps, {args.threads} thread(s), "
        f"engine {engine.kind}; torch {torch.__version__}; {platform.machine()}\n"
    )
    print("| metric | library | s / image | forwards / image | floor s / image | ratio to floor |")
    print("| --- | --- | --- | --- | --- | --- |")
    for metric, lib, t, passes, fl in perturbation_rows(
        model, engine, x, maps, targets, mean, std, args.steps
    ):
        ratio = t / fl if fl and np.isfinite(t) else float("nan")
        print(f"| {metric} | {lib} | {t / n:.3f} | {passes / n:.0f} | {fl / n:.3f} | {ratio:.2f} |")
    print("\n| metric (no forward pass) | camscope ms / image | Quantus ms / image |")
    print("| --- | --- | --- |")
    for name, t, q in free_rows(x, maps, targets):
        print(f"| {name} | {1000 * t / n:.2f} | {1000 * q / n:.2f} |")
    print("\n| `--metrics` column group | s / image / method |")
    print("| --- | --- |")
    for name, t in metrics_cost(engine, x, maps, targets, mean, std, args.steps):
        print(f"| {name} | {t:.3f} |")


if __name__ == "__main__":
    main()
