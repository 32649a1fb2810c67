"""Meta-evaluation of the metrics on synthetic images whose ground truth is known.

A small CNN (camscope.metrics.synthetic.ShapesNet, trained on the CPU and cached under
~/.cache/camscope/synthetic/) classifies coloured shapes on textured backgrounds with
distractors. For each test image six explanations are scored by every metric:

    correct:  Grad-CAM of the true class; the ground-truth object mask
    wrong:    Grad-CAM of another class; the Grad-CAM map with its pixels shuffled; the Grad-CAM
              map blurred (Gaussian, sigma = size / 4); a random map (uniform noise on an 8x8 grid,
              bilinear upsampling)

A metric passes against a wrong explanation when the paired difference (correct - wrong), in the
metric's "better" direction, has a 95 % bootstrap interval (camscope.metrics.paired_difference)
that excludes 0.

    python benchmarks/meta_eval.py                     # 3000 training images, 64x64, 200 test
    python benchmarks/meta_eval.py --n-test 50 --size 32 --n-train 600 --epochs 4   # quick
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

from camscope import GradCAM
from camscope.metrics import (
    auc,
    average_drop_increase,
    deletion_curve,
    energy_pointing_game,
    entropy,
    gaussian_blur,
    insertion_curve,
    paired_difference,
    pointing_game,
    relevance_mass,
    relevance_rank,
    road,
    sparseness,
)
from camscope.metrics.synthetic import MEAN, STD, cached_shapes_net, make_shapes

#: metric -> +1 (higher is better) or -1 (lower is better)
DIRECTION = {
    "average_drop": -1,
    "deletion_auc": -1,
    "deletion_blur_auc": -1,
    "insertion_auc": 1,
    "road_morf": -1,
    "road_lerf": 1,
    "road_combined": 1,
    "pointing_game": 1,
    "energy_pointing_game": 1,
    "relevance_mass": 1,
    "relevance_rank": 1,
}
CORRECT = ("gradcam_true", "gt_mask")
WRONG = ("gradcam_other", "shuffled", "blurred", "random")


def _minmax(m: torch.Tensor) -> torch.Tensor:
    flat = m.flatten(1)
    lo, hi = flat.amin(1, keepdim=True), flat.amax(1, keepdim=True)
    return ((flat - lo) / (hi - lo).clamp_min(1e-12)).view_as(m)


def explanations(model, x, labels, masks, seed=0) -> dict[str, torch.Tensor]:
    """The six (N, H, W) maps in [0, 1]."""
    n, _, h, w = x.shape
    g = torch.Generator().manual_seed(seed)
    cam = GradCAM(model, target_layers="features")
    true = torch.as_tensor(cam(x, targets=labels))
    other = torch.as_tensor(cam(x, targets=(labels + 1 + (torch.arange(n) % 2)) % 3))
    perm = torch.argsort(torch.rand(n, h * w, generator=g), dim=1)
    shuffled = true.flatten(1).gather(1, perm).view_as(true)
    k = 2 * (h // 4) + 1
    blurred = _minmax(gaussian_blur(true[:, None], kernel_size=k, sigma=h / 4)[:, 0])
    coarse = torch.rand(n, 1, 8, 8, generator=g)
    random = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)[:, 0]
    return {
        "gradcam_true": true,
        "gt_mask": masks.float(),
        "gradcam_other": other,
        "shuffled": shuffled,
        "blurred": blurred,
        "random": _minmax(random),
    }


def score(model, x, labels, maps, masks, *, steps=16, fractions=(0.1, 0.3, 0.5, 0.7, 0.9)):
    """Every metric of one explanation, {metric: (N,) numpy}."""
    regions = masks.bool()
    di = average_drop_increase(model, x, maps, labels, mean=MEAN, std=STD)
    r = road(
        model, x, maps, labels, fractions=fractions, generator=torch.Generator().manual_seed(0)
    )
    out = {
        "average_drop": di.average_drop,
        "deletion_auc": auc(deletion_curve(model, x, maps, labels, steps=steps)),
        "deletion_blur_auc": auc(
            deletion_curve(model, x, maps, labels, steps=steps, baseline="blur")
        ),
        "insertion_auc": auc(insertion_curve(model, x, maps, labels, steps=steps)),
        "road_morf": r.morf_mean,
        "road_lerf": r.lerf_mean,
        "road_combined": r.combined,
        "pointing_game": pointing_game(maps, regions, tolerance=x.shape[-1] * 15 / 224),
        "energy_pointing_game": energy_pointing_game(maps, regions),
        "relevance_mass": relevance_mass(maps, regions),
        "relevance_rank": relevance_rank(maps, regions),
        "sparseness": sparseness(maps),
        "entropy": entropy(maps),
    }
    return {k: v.detach().cpu().numpy().astype(np.float64) for k, v in out.items()}


def meta_evaluate(model, data, **kw) -> tuple[dict, dict]:
    """(scores {explanation: {metric: (N,)}}, verdicts {(metric, correct, wrong): (diff, pass)})."""
    x, labels = data.inputs(), torch.from_numpy(data.labels)
    masks = torch.from_numpy(data.masks)
    maps = explanations(model, x, labels, masks)
    scores = {name: score(model, x, labels, m, masks, **kw) for name, m in maps.items()}
    verdicts = {}
    for metric, sign in DIRECTION.items():
        for good in CORRECT:
            for bad in WRONG:
                d = paired_difference(sign * scores[good][metric], sign * scores[bad][metric])
                verdicts[(metric, good, bad)] = (d, d.significant and d.mean > 0)
    return scores, verdicts


def table(scores, verdicts) -> str:
    """Markdown: per metric the mean of each explanation, then pass/fail against each wrong one."""
    names = list(scores)
    head = "| metric | better | " + " | ".join(names) + " | Grad-CAM (true) beats | mask beats |"
    lines = [head, "|" + " --- |" * (len(names) + 4)]
    for metric in [*DIRECTION, "sparseness", "entropy"]:
        means = " | ".join(f"{np.nanmean(scores[n][metric]):.3f}" for n in names)
        sign = DIRECTION.get(metric)
        better = {1: "higher", -1: "lower", None: "(no truth)"}[sign]
        cells = []
        for good in CORRECT:
            if sign is None:
                cells.append("")
                continue
            won = [b for b in WRONG if verdicts[(metric, good, b)][1]]
            lost = [b for b in WRONG if b not in won]
            cells.append(
                f"{len(won)}/{len(WRONG)}" + (f" (not: {', '.join(lost)})" if lost else "")
            )
        lines.append(f"| {metric} | {better} | {means} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-train", type=int, default=3000)
    ap.add_argument("--n-test", type=int, default=200)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    model = cached_shapes_net(args.n_train, args.size, epochs=args.epochs)
    t1 = time.perf_counter()
    test = make_shapes(args.n_test, args.size, seed=12345)
    with torch.no_grad():
        acc = float((model(test.inputs()).argmax(1).numpy() == test.labels).mean())
    scores, verdicts = meta_evaluate(model, test)
    t2 = time.perf_counter()
    print(
        f"model: ShapesNet on {args.n_train} images {args.size}x{args.size}, {args.epochs} epochs "
        f"({t1 - t0:.1f} s incl. cache); test accuracy {acc:.3f} on {args.n_test} images; "
        f"metrics {t2 - t1:.1f} s; {args.threads} thread(s)\n"
    )
    print(table(scores, verdicts))


if __name__ == "__main__":
    main()
