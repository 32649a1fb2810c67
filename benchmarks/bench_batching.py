"""Grad-CAM throughput: a batch of 32 images against one image at a time (same process).

python benchmarks/bench_batching.py [--model resnet50|efficientnet_lite0] [--n 32]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from camscope.methods import GradCAM  # noqa: E402
from camscope.models import load_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.model == "efficientnet_lite0":
        model, layer = load_model(args.model).model, "bn2"
    else:
        import torchvision

        model, layer = torchvision.models.get_model(args.model).eval(), "layer4[-1]"
    torch.manual_seed(0)
    x = torch.randn(args.n, 3, 224, 224)
    with GradCAM(model, layer) as cam:
        cam(x[:2])  # warm-up
        one, batched = [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            single = torch.cat([cam(x[i : i + 1]) for i in range(args.n)])
            one.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            maps = cam(x)
            batched.append(time.perf_counter() - t0)
        assert (single - maps).abs().max() < 1e-4
    one_s, batch_s = min(one), min(batched)
    print(
        f"{args.model} Grad-CAM, {args.n} images, {torch.get_num_threads()} threads: one at a "
        f"time {args.n / one_s:.1f} img/s, batch of {args.n} {args.n / batch_s:.1f} img/s, "
        f"ratio {one_s / batch_s:.2f}x (max abs diff {(single - maps).abs().max():.1e})"
    )
    try:
        from pytorch_grad_cam import GradCAM as PgcGradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    except ImportError:
        return
    targets = model(x).argmax(1).tolist()
    with PgcGradCAM(
        model=model,
        target_layers=[dict(model.named_modules())["layer4.2" if layer == "layer4[-1]" else layer]],
    ) as pgc:
        pgc(input_tensor=x[:1], targets=[ClassifierOutputTarget(targets[0])])
        t0 = time.perf_counter()
        for i in range(args.n):
            pgc(input_tensor=x[i : i + 1], targets=[ClassifierOutputTarget(targets[i])])
        pgc_s = time.perf_counter() - t0
    print(
        f"pytorch-grad-cam one at a time: {args.n / pgc_s:.1f} img/s; camscope batch of "
        f"{args.n} is {pgc_s / batch_s:.2f}x its throughput"
    )


if __name__ == "__main__":
    main()
