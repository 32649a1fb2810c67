"""The seed study's ten images: ScoreCAM with the authors' formula vs pytorch-grad-cam's.

For each image and variant: empty map?, share of the map above 0.5, Pearson r with Grad-CAM,
Average Drop, Deletion and Insertion AUC (camscope.metrics), and the largest weight share
(how much of the weight the single strongest channel takes).

    python benchmarks/seed_variants.py ../shared/imagenet-samples [--model efficientnet_lite0]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from camscope.engine import InferenceEngine  # noqa: E402
from camscope.io import load_image, preprocess  # noqa: E402
from camscope.methods import GradCAM, ScoreCAM  # noqa: E402
from camscope.metrics import auc, average_drop_increase, deletion_curve, insertion_curve, pearson  # noqa: E402
from camscope.models import load_model  # noqa: E402

SEED_IMAGES = [
    "n02098286_West_Highland_white_terrier",
    "n02018207_American_coot",
    "n04285008_sports_car",
    "n02007558_flamingo",
    "n01608432_kite",
    "n01443537_goldfish",
    "n01491361_tiger_shark",
    "n01616318_vulture",
    "n01677366_common_iguana",
    "n07747607_orange",
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder")
    parser.add_argument("--model", default="efficientnet_lite0")
    args = parser.parse_args()
    loaded = load_model(args.model)
    folder = Path(args.folder)
    paths = [next(folder.glob(f"{stem}.*")) for stem in SEED_IMAGES]
    x = torch.stack([preprocess(load_image(p), mean=loaded.mean, std=loaded.std)[1] for p in paths])
    with GradCAM(loaded.model, loaded.default_layer) as cam:
        grad = cam.explain(x)
    targets = grad.targets
    engine = InferenceEngine(loaded.model)  # the fastest exact inference path for the metrics
    engine.prepare(x, expected_passes=1000)
    kw = {"mean": loaded.mean, "std": loaded.std}
    print(
        "| image | variant | empty | share > 0.5 | top channel weight | r vs Grad-CAM "
        "| Avg Drop % | Deletion | Insertion |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    summary = {}
    for variant in ("reference", "pytorch-grad-cam"):
        with ScoreCAM(loaded.model, loaded.default_layer, variant=variant) as cam:
            res = cam.explain(x, targets)
        drop = average_drop_increase(engine, x, res.maps, targets, **kw).average_drop
        dele = auc(deletion_curve(engine, x, res.maps, targets))
        ins = auc(insertion_curve(engine, x, res.maps, targets))
        r = pearson(res.maps, grad.maps)
        share = (res.maps > 0.5).flatten(1).float().mean(1)
        top = res.weights.abs().amax(1) / res.weights.abs().sum(1).clamp_min(1e-12)
        for i, p in enumerate(paths):
            print(
                f"| {p.stem[10:]} | {variant} | {bool(res.empty[i])} | {share[i]:.3f} | "
                f"{top[i]:.3f} | {r[i]:.2f} | {100 * drop[i]:.1f} | {dele[i]:.3f} | "
                f"{ins[i]:.3f} |"
            )
        summary[variant] = (
            res.empty.float().mean(),
            share.mean(),
            top.mean(),
            r.mean(),
            100 * drop.mean(),
            dele.mean(),
            ins.mean(),
        )
    print(
        "\n| variant | empty | mean share > 0.5 | mean top channel weight | mean r vs Grad-CAM "
        "| Avg Drop % | Deletion | Insertion |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for variant, v in summary.items():
        print(
            f"| {variant} | {100 * v[0]:.0f}% | {v[1]:.3f} | {v[2]:.3f} | {v[3]:.2f} | "
            f"{v[4]:.1f} | {v[5]:.3f} | {v[6]:.3f} |"
        )


if __name__ == "__main__":
    main()
