"""RefineCAM and SESS against float64 references written from their definitions, and against
pytorch-grad-cam 1.5.7.

The base maps of the references come from the gradient formulas of tests/test_methods_gradient
(whole-model hooks, never camscope's split); SESS's windows, weights, pasting, fusion and
Gaussian blur are written out with NumPy loops.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import TinyNet, _make
from test_methods_gradient import pearson, ref_finish, reference

from camscope.methods import SESS, GradCAM, RefineCAM

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def setup():
    net = _make(TinyNet, 0, torch.float64)
    torch.manual_seed(11)
    return net, torch.randn(3, 3, 16, 16, dtype=torch.float64)


def minmax(m: torch.Tensor) -> torch.Tensor:
    span = m.max() - m.min()
    return torch.zeros_like(m) if span == 0 else (m - m.min()) / span


@pytest.mark.parametrize("base", ["gradcampp", "gradcam"])
def test_refinecam_is_the_product_of_the_layers_maps(setup, base):
    net, x = setup
    targets = [0, 3, 4]
    layers = ["act1", "act2", "conv3"]
    product = torch.ones(3, 16, 16, dtype=torch.float64)
    for layer in layers:
        product = product * ref_finish(reference(base, net, layer, x, targets), (16, 16))
    expected = torch.stack([minmax(p) for p in product])
    kwargs = {} if base == "gradcampp" else {"base_method": GradCAM}
    result = RefineCAM(net, layers, **kwargs).explain(x, targets)
    assert (result.maps - expected).abs().max() <= 1e-5
    single = RefineCAM(net, ["act2"], **kwargs).explain(x, targets)
    assert (
        single.maps - ref_finish(reference(base, net, "act2", x, targets), (16, 16))
    ).abs().max() <= 1e-5


def ref_gaussian(m: np.ndarray, size: int = 11, sigma: float = 5.0) -> np.ndarray:
    r = size // 2
    k = np.array([math.exp(-((i - r) ** 2) / (2 * sigma**2)) for i in range(size)])
    k2 = np.outer(k, k) / k.sum() ** 2
    padded = np.pad(m, r, mode="reflect")  # reflect without repeating the edge
    out = np.zeros_like(m)
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            out[i, j] = (padded[i : i + size, j : j + size] * k2).sum()
    return out


def ref_gradcam_window(net, patch: torch.Tensor, target: int) -> np.ndarray:
    """Grad-CAM of one window: ReLU, min-max at the layer, bilinear up, min-max (float64)."""
    raw = torch.relu(reference("gradcam", net, "act2", patch, [target]))[0]
    up = F.interpolate(minmax(raw)[None, None], size=patch.shape[-2:], mode="bilinear")[0, 0]
    return minmax(up).numpy()


def ref_sess(net, image, target, scales, window, step, theta, pool, smooth):
    from torchvision.transforms.functional import resize

    h, w = image.shape[-2:]
    pasted, scores = [], []
    for scale in scales:
        scaled = resize(image, scale)
        sh, sw = scaled.shape[-2:]
        ys = sorted({min(s, sh - window) for s in range(0, sh, step)})
        xs = sorted({min(s, sw - window) for s in range(0, sw, step)})
        for y in ys:
            for x in xs:
                patch = scaled[:, :, y : y + window, x : x + window]
                with torch.no_grad():
                    scores.append(max(float(torch.softmax(net(patch), -1)[0, target]), 0.0))
                canvas = torch.zeros(1, 1, sh, sw, dtype=torch.float64)
                canvas[0, 0, y : y + window, x : x + window] = torch.from_numpy(
                    ref_gradcam_window(net, patch, target)
                )
                pasted.append(F.interpolate(canvas, size=(h, w), mode="bilinear")[0, 0].numpy())
    top = max(scores)
    maps = [p * s / top for p, s in zip(pasted, scores, strict=True)]
    if pool == "max":
        fused = np.max(maps, axis=0)
    else:
        fused = np.zeros((h, w))
        for i in range(h):
            for j in range(w):
                kept = [m[i, j] for m in maps if m[i, j] > theta]
                fused[i, j] = sum(kept) / len(kept) if kept else 0.0
    return ref_gaussian(fused) if smooth else fused


@pytest.mark.parametrize(
    "options",
    [
        {"num_scales": 2},
        {"num_scales": 3, "pool": "max", "smooth": False},
        {"scales": [16, 20], "window_size": 12, "step_size": 4, "theta": 0.3},
    ],
)
def test_sess_matches_the_written_out_procedure(setup, options):
    net, x = setup
    targets = [0, 3]
    result = SESS(net, "act2", batch_size=5, **options).explain(x[:2], targets)
    window = options.get("window_size", 16)
    step = options.get("step_size", window)
    scales = options.get("scales") or [
        16 + round(16 * 2 / 7) * i for i in range(options["num_scales"])
    ]
    for n, target in enumerate(targets):
        fused = ref_sess(
            net, x[n : n + 1], target, scales, window, step,
            options.get("theta", 0.0), options.get("pool", "mean"), options.get("smooth", True),
        )  # fmt: skip
        assert np.abs(result.raw[n].double().numpy() - fused).max() <= 1e-5 * max(1, fused.max())
        assert (result.maps[n] - minmax(torch.from_numpy(fused))).abs().max() <= 1e-5


def test_sess_rejects_bad_arguments(setup):
    net, _ = setup
    with pytest.raises(ValueError, match="pool"):
        SESS(net, "act2", pool="median")
    with pytest.raises(ValueError, match="pre_filter_ratio"):
        SESS(net, "act2", pre_filter_ratio=1.0)


@pytest.fixture(scope="module")
def pgc_setup():
    pgc = pytest.importorskip("pytorch_grad_cam")
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    torch.manual_seed(1)
    return pgc, model, torch.randn(2, 3, 64, 64)


@pytest.mark.parametrize("base", ["GradCAMPlusPlus", "GradCAM"])
def test_refinecam_equals_pytorch_grad_cam(pgc_setup, base):
    import camscope

    pgc, model, x = pgc_setup
    layers = [model.layer2, model.layer3, model.layer4]
    theirs = pgc.RefineCAM(model, layers, base_method=getattr(pgc, base))(x, None)
    ours = RefineCAM(model, layers, base_method=getattr(camscope, base))(x).numpy()
    for n in range(len(x)):
        assert pearson(ours[n], theirs[n]) >= 0.999, n


@pytest.mark.parametrize(
    "options",
    [{}, {"pool": "max", "num_scales": 4}, {"pre_filter_ratio": 0.5, "theta": 0.2, "num_scales": 5},
     {"window_size": 48, "step_size": 16, "num_scales": 3, "smooth": False}],
)  # fmt: skip
def test_sess_equals_pytorch_grad_cam(pgc_setup, options):
    pgc, model, x = pgc_setup
    images = x[:1] if not options else x
    theirs = pgc.SESS(model, [model.layer4], **options)(images, None)
    ours = SESS(model, [model.layer4], **options)(images).numpy()
    for n in range(len(images)):
        assert pearson(ours[n], theirs[n]) >= 0.999, n
