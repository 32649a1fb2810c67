"""What building a CAM object per image costs: camscope vs pytorch-grad-cam vs torch-cam.

pytorch-grad-cam's README builds its CAM object per image, in a ``with`` block; users copy that.
This script times Grad-CAM on ResNet-50 (random weights, seed 0; one 224x224 image; one torch
thread) in two usage patterns per library, interleaved round by round in this one process so
that a shared machine slows all of them alike:

* ``reused``: one object, called once per image;
* ``built``:  ``with GradCAM(model, ...) as cam: cam(x)`` per image (an object per image).

camscope also gets ``cold``: built per image after forgetting its construction cache
(`camscope.layers.cache.clear_cache`), i.e. what every object cost before the cache, and
``setup``: the construction alone (object, split and layout from the cache, no forward).
``forward`` is a plain no-grad forward pass of the model, the floor.

Usage (results in BENCHMARKS.md)::

    python benchmarks/bench_construct.py --rounds 20
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from camscope.layers.cache import cached_layout, clear_cache  # noqa: E402
from camscope.methods import GradCAM  # noqa: E402


def patterns(model: torch.nn.Module, x: torch.Tensor) -> dict[str, Callable[[], object]]:
    """Name -> one image's work, per library and usage pattern (libraries that import)."""
    layer = model.layer4[-1]
    reused = GradCAM(model, target_layers=[layer])
    out: dict[str, Callable[[], object]] = {}

    def forward() -> object:
        with torch.no_grad():
            return model(x)

    def cs_built() -> object:
        with GradCAM(model, target_layers=[layer]) as cam:
            return cam(x)

    def cs_cold() -> object:
        clear_cache(model)
        return cs_built()

    def cs_setup() -> object:
        with GradCAM(model, target_layers=[layer]) as cam:
            cam.runner  # noqa: B018 - the split, from the cache
            return cached_layout(model, "layer4.2", (224, 224), 3)

    out.update(
        {
            "forward": forward,
            "camscope reused": lambda: reused(x),
            "camscope built": cs_built,
            "camscope cold": cs_cold,
            "camscope setup": cs_setup,
        }
    )
    try:
        import pytorch_grad_cam as pgc

        pgc_reused = pgc.GradCAM(model=model, target_layers=[layer])

        def pgc_built() -> object:
            with pgc.GradCAM(model=model, target_layers=[layer]) as cam:
                return cam(input_tensor=x, targets=None)

        out["pytorch-grad-cam reused"] = lambda: pgc_reused(input_tensor=x, targets=None)
        out["pytorch-grad-cam built"] = pgc_built
    except ImportError:
        print("pytorch-grad-cam not installed: skipped", file=sys.stderr)
    try:
        from torchcam.methods import GradCAM as TorchCamGradCAM

        tc_reused = TorchCamGradCAM(model, target_layer="layer4")

        def tc_call(extractor: TorchCamGradCAM) -> object:
            scores = model(x)
            return extractor(scores.squeeze(0).argmax().item(), scores)

        def tc_built() -> object:
            with TorchCamGradCAM(model, target_layer="layer4") as extractor:
                return tc_call(extractor)

        out["torch-cam reused"] = lambda: tc_call(tc_reused)
        out["torch-cam built"] = tc_built
    except ImportError:
        print("torchcam not installed: skipped", file=sys.stderr)
    return out


def measure(work: dict[str, Callable[[], object]], rounds: int) -> dict[str, list[float]]:
    """Seconds per call of each pattern, interleaved: every round runs each pattern once."""
    for fn in work.values():  # warm-up (and the first, uncached split)
        fn()
    times: dict[str, list[float]] = {name: [] for name in work}
    for _ in range(rounds):
        for name, fn in work.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--json", type=Path, default=None, help="also write the times here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet50(weights=None).eval()
    x = torch.randn(1, 3, 224, 224)
    times = measure(patterns(model, x), args.rounds)
    median = {name: statistics.median(t) for name, t in times.items()}
    base = median["camscope reused"]
    print(
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, 1 thread, "
        f"ResNet-50 random weights, 224x224, {args.rounds} interleaved rounds (median s)"
    )
    print(f"{'pattern':28s} {'s/image':>9s} {'/ camscope reused':>18s}")
    for name, value in median.items():
        print(f"{name:28s} {value:9.4f} {value / base:18.3f}")
    for lib in ("camscope", "pytorch-grad-cam", "torch-cam"):
        if f"{lib} built" in median:
            built, reused = median[f"{lib} built"], median[f"{lib} reused"]
            print(
                f"{lib}: built per image / reused = {built / reused:.3f} "
                f"({built - reused:+.4f} s per image)"
            )
    print(f"camscope setup alone / one Grad-CAM call = {median['camscope setup'] / base:.4f}")
    if args.json:
        args.json.write_text(json.dumps(times, indent=1))


if __name__ == "__main__":
    main()
