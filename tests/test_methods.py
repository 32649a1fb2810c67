"""Grad-CAM, AblationCAM and ScoreCAM against slow, obviously-correct float64 references.

Every reference below runs the WHOLE model (forward hooks to read or replace the target layer's
output), one plain loop per channel where the method is per-channel, and never uses camscope's
split. Networks are small or run at 64x64 to keep the file fast on a CPU; ResNet-50 and the
inner EfficientNet-Lite0 layers check a random subset of channels (the weights are per-channel
independent, so a subset is a fair sample).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from conftest import ConstantChannelNet, TinyNet
from torch import nn

import camscope.layers.split
from camscope.layers import LayerError, resolve_layer
from camscope.layers.cache import clear_cache
from camscope.layers.split import FeatureRunner, HookRunner, SplitError, split_model
from camscope.methods import (
    METHODS,
    AblationCAM,
    BaseCAM,
    CAMResult,
    GradCAM,
    ScoreCAM,
    normalise_maps,
)

pytestmark = pytest.mark.usefixtures("single_thread")

TOL = 1e-5  # max abs difference allowed against float64 references

# --------------------------------------------------------------------------------------------
# References (float64, whole model, brute force)
# --------------------------------------------------------------------------------------------


def capture(model: nn.Module, layer: str, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(activations of ``layer``, logits) from one plain forward of the whole model."""
    _, module = resolve_layer(model, layer)
    store = []
    handle = module.register_forward_hook(lambda _m, _i, out: store.append(out.detach().clone()))
    try:
        with torch.no_grad():
            logits = model(x)
    finally:
        handle.remove()
    assert len(store) == 1
    return store[0], logits


def ref_normalise(raw: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear (half-pixel centres) upsample, then per-map min-max; constant maps -> 0."""
    up = F.interpolate(raw[:, None].double(), size=size, mode="bilinear", align_corners=False)
    out = []
    for m in up[:, 0]:
        lo, hi = m.min(), m.max()
        out.append(torch.zeros_like(m) if hi == lo else (m - lo) / (hi - lo))
    return torch.stack(out)


def ref_maps(weights: torch.Tensor, acts: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    raw = torch.zeros(acts.shape[0], *acts.shape[2:], dtype=torch.float64)
    for n in range(acts.shape[0]):
        for k in range(acts.shape[1]):
            raw[n] += weights[n, k].double() * acts[n, k].double()
    return ref_normalise(torch.relu(raw), size)


def gradcam_reference(model, layer, x, targets):
    """d logit_c / dA through the whole model; alpha = spatial mean; ReLU(sum alpha A)."""
    _, module = resolve_layer(model, layer)
    store = []
    handle = module.register_forward_hook(lambda _m, _i, out: store.append(out))
    try:
        with torch.enable_grad():
            logits = model(x)
            targets = logits.argmax(1) if targets is None else torch.as_tensor(targets)
            score = sum(logits[n, int(targets[n])] for n in range(len(x)))
            (grads,) = torch.autograd.grad(score, store[0])
    finally:
        handle.remove()
    acts = store[0].detach()
    alpha = grads.mean(dim=(2, 3))
    raw = torch.relu((alpha[:, :, None, None] * acts).sum(1))
    return ref_normalise(raw, tuple(x.shape[-2:])), raw, alpha


def ablation_reference(model, layer, x, targets=None, channels=None):
    """(y_c - y_c^k) / y_c with y_c^k from a whole-model forward in which a hook replaces the
    layer's output by the activations with channel k zeroed (one batch row per image and
    ablated channel, all rows in one forward pass).

    Returns (weights (N, len(channels)), activations, targets).
    """
    _, module = resolve_layer(model, layer)
    acts, logits = capture(model, layer, x)
    targets = logits.argmax(1) if targets is None else torch.as_tensor(targets)
    channels = list(range(acts.shape[1])) if channels is None else list(channels)
    ablated = acts.repeat_interleave(len(channels), dim=0)  # row n * len(channels) + j
    for n in range(len(x)):
        for j, k in enumerate(channels):
            ablated[n * len(channels) + j, k] = 0
    handle = module.register_forward_hook(lambda _m, _i, _out: ablated.clone())
    try:
        with torch.no_grad():
            out = model(x.repeat_interleave(len(channels), dim=0))
    finally:
        handle.remove()
    weights = torch.zeros(len(x), len(channels), dtype=torch.float64)
    for n in range(len(x)):
        base = logits[n, targets[n]]
        rows = out[n * len(channels) : (n + 1) * len(channels), targets[n]]
        weights[n] = (base - rows) / base
    return weights, acts, targets


def scorecam_reference(model, layer, x, targets, variant="reference", max_channels=None):
    """The per-channel loop of ScoreCAM, one masked forward at a time."""
    acts, _ = capture(model, layer, x)
    size = tuple(x.shape[-2:])
    n_img, channels = acts.shape[:2]
    weights = torch.zeros(n_img, channels, dtype=torch.float64)
    for n in range(n_img):
        chosen = list(range(channels))
        if max_channels is not None:
            flat = acts[n].flatten(1)
            varying = [k for k in chosen if flat[k].max() > flat[k].min()]
            var = {k: float(flat[k].var()) for k in varying}
            chosen = sorted(sorted(varying, key=lambda k: -var[k])[:max_channels])
        scores = {}
        for k in chosen:
            if variant == "reference":
                up = F.interpolate(acts[n, k][None, None], size, mode="bilinear")[0, 0]
                if up.max() == up.min():
                    continue  # no mask: weight 0
                mask = (up - up.min()) / (up.max() - up.min())
                with torch.no_grad():
                    probs = torch.softmax(model(x[n : n + 1] * mask), dim=1)
                weights[n, k] = probs[0, targets[n]]
            else:  # pytorch-grad-cam 1.5
                up = F.interpolate(
                    acts[n, k][None, None], size, mode="bilinear", align_corners=True
                )
                up = up[0, 0]
                mask = (up - up.min()) / (up.max() - up.min() + 1e-8)
                if max_channels is not None and up.max() == up.min():
                    continue
                with torch.no_grad():
                    scores[k] = model(x[n : n + 1] * mask)[0, targets[n]]
        if variant != "reference":
            keys = sorted(scores)
            weights[n, keys] = torch.softmax(torch.stack([scores[k] for k in keys]), dim=0)
    return ref_maps(weights, acts, size), weights


def top1(model, x):
    with torch.no_grad():
        return model(x).argmax(1)


class SubsetRunner(FeatureRunner):
    """Presents only ``channels`` of the layer to a CAM; the other channels stay as they were.

    Lets the real AblationCAM code compute the weights of a channel subset of a wide layer
    (ablating subset channel j ablates channel ``channels[j]`` of the real layer).
    """

    def __init__(self, inner: FeatureRunner, channels: list[int]) -> None:
        self.inner = inner
        self.channels = torch.as_tensor(channels)
        self.exact_split = inner.exact_split
        self.note = inner.note

    def features(self, inputs):
        acts, cache = self.inner.features(inputs)
        return acts[:, self.channels], (acts, *cache)

    def classify(self, activations, cache):
        full, *rest = cache
        full = full.clone()
        full[:, self.channels] = activations
        return self.inner.classify(full, tuple(rest))


# --------------------------------------------------------------------------------------------
# Shared networks
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def resnet18():
    torch.manual_seed(0)
    return torchvision.models.resnet18().eval().double()


@pytest.fixture(scope="module")
def resnet50():
    torch.manual_seed(0)
    return torchvision.models.resnet50().eval().double()


@pytest.fixture(scope="module")
def lite0():
    from camscope.models import load_model

    return copy.deepcopy(load_model("efficientnet_lite0").model).double()


@pytest.fixture(scope="module")
def x64():
    torch.manual_seed(7)
    return torch.randn(2, 3, 64, 64, dtype=torch.float64)


# --------------------------------------------------------------------------------------------
# normalise_maps
# --------------------------------------------------------------------------------------------


def _bilinear_loop(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Bilinear resize with half-pixel centres (align_corners=False), written out by hand."""
    h, w = img.shape
    out = np.zeros((out_h, out_w))
    for i in range(out_h):
        sy = max((i + 0.5) * h / out_h - 0.5, 0.0)
        y0 = min(int(np.floor(sy)), h - 1)
        y1, ly = min(y0 + 1, h - 1), sy - y0
        for j in range(out_w):
            sx = max((j + 0.5) * w / out_w - 0.5, 0.0)
            x0 = min(int(np.floor(sx)), w - 1)
            x1, lx = min(x0 + 1, w - 1), sx - x0
            top = (1 - lx) * img[y0, x0] + lx * img[y0, x1]
            bottom = (1 - lx) * img[y1, x0] + lx * img[y1, x1]
            out[i, j] = (1 - ly) * top + ly * bottom
    return out


def test_normalise_maps_upsamples_with_half_pixel_centres_and_min_max():
    torch.manual_seed(0)
    raw = torch.relu(torch.randn(2, 3, 5, dtype=torch.float64))
    maps, empty = normalise_maps(raw, (12, 17))
    assert maps.shape == (2, 12, 17) and maps.dtype == torch.float32
    for n in range(2):
        up = _bilinear_loop(raw[n].numpy(), 12, 17)
        expected = (up - up.min()) / (up.max() - up.min())
        np.testing.assert_allclose(maps[n].numpy(), expected, atol=1e-6)
        assert maps[n].max() == 1 and maps[n].min() == 0
    assert not empty.any()


def test_normalise_maps_constant_maps_are_zero_and_flagged_empty():
    raw = torch.stack([torch.zeros(4, 4), torch.full((4, 4), 3.0), torch.rand(4, 4) * 1e-30])
    raw[2, 0, 0] = 1e-30  # tiny but not constant
    maps, empty = normalise_maps(raw, (8, 8))
    assert empty.tolist() == [True, True, False]
    assert torch.all(maps[:2] == 0)
    assert torch.isfinite(maps).all()
    assert maps.min() >= 0 and maps.max() <= 1
    assert maps[2].max() == 1 and maps[2].min() == 0


# --------------------------------------------------------------------------------------------
# Grad-CAM
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layer", ["act2", "conv3", "act1"])
def test_gradcam_matches_reference_on_tiny_model(tiny_model, tiny_inputs, layer):
    expected, raw, alpha = gradcam_reference(tiny_model, layer, tiny_inputs, None)
    with GradCAM(tiny_model, layer) as cam:
        result = cam.explain(tiny_inputs)
    assert isinstance(result, CAMResult)
    assert result.maps.shape == (3, 16, 16) and result.maps.dtype == torch.float32
    assert (result.maps - expected).abs().max() <= TOL
    assert (result.raw.double() - raw).abs().max() <= TOL
    assert (result.weights.double() - alpha).abs().max() <= TOL
    assert torch.equal(result.targets, top1(tiny_model, tiny_inputs))
    assert result.maps.min() >= 0 and result.maps.max() <= 1
    if layer == "conv3":
        assert cam.notes == []  # split with torch.fx, no fallback


def test_gradcam_matches_reference_on_resnet18(resnet18, x64):
    targets = [3, 999]
    expected, raw, _ = gradcam_reference(resnet18, "layer4.1", x64, targets)
    with GradCAM(resnet18, "layer4[-1]") as cam:
        result = cam.explain(x64, targets)
    assert cam.layer == "layer4.1"
    assert result.maps.shape == (2, 64, 64)
    assert (result.maps - expected).abs().max() <= TOL
    assert (result.raw.double() - raw).abs().max() <= TOL
    assert result.targets.tolist() == targets


def test_gradcam_targets_forms(tiny_model, tiny_inputs):
    cam = GradCAM(tiny_model, "act2")
    best = top1(tiny_model, tiny_inputs)
    forms = {
        "none": (None, best),
        "int": (4, torch.tensor([4, 4, 4])),
        "list": ([0, 2, 4], torch.tensor([0, 2, 4])),
        "tuple": ((1, 1, 3), torch.tensor([1, 1, 3])),
        "tensor": (torch.tensor([2, 0, 1]), torch.tensor([2, 0, 1])),
        "0-d tensor": (torch.tensor(3), torch.tensor([3, 3, 3])),
        "numpy int": (np.int64(1), torch.tensor([1, 1, 1])),
    }
    for name, (given, wanted) in forms.items():
        result = cam.explain(tiny_inputs, given)
        assert torch.equal(result.targets, wanted), name
        expected, _, _ = gradcam_reference(tiny_model, "act2", tiny_inputs, wanted)
        assert (result.maps - expected).abs().max() <= TOL, name
    # __call__ returns the maps
    assert torch.equal(cam(tiny_inputs, [0, 2, 4]), cam.explain(tiny_inputs, [0, 2, 4]).maps)


@pytest.mark.parametrize(
    "targets, match",
    [
        ([1, 2], "2 targets for a batch of 3"),
        (torch.tensor([1, 2, 3, 4]), "4 targets"),
        (5, "out of range"),
        (-1, "out of range"),
        ([0, 1, 5], "out of range"),
    ],
)
def test_gradcam_bad_targets_raise(tiny_model, tiny_inputs, targets, match):
    with pytest.raises(ValueError, match=match):
        GradCAM(tiny_model, "act2").explain(tiny_inputs, targets)


def test_gradcam_leaves_no_grads_and_keeps_requires_grad(tiny_model, tiny_inputs):
    tiny_model.conv1.weight.requires_grad_(False)
    before = {n: p.requires_grad for n, p in tiny_model.named_parameters()}
    GradCAM(tiny_model, "conv3").explain(tiny_inputs)
    GradCAM(tiny_model, "act1").explain(tiny_inputs)
    assert {n: p.requires_grad for n, p in tiny_model.named_parameters()} == before
    assert all(p.grad is None for p in tiny_model.parameters())
    assert tiny_inputs.grad is None and not tiny_inputs.requires_grad


def test_gradcam_works_inside_no_grad(tiny_model, tiny_inputs):
    expected, _, _ = gradcam_reference(tiny_model, "act2", tiny_inputs, None)
    with torch.no_grad():
        maps = GradCAM(tiny_model, "act2")(tiny_inputs)
    assert (maps - expected).abs().max() <= TOL


# --------------------------------------------------------------------------------------------
# Fallback to HookRunner
# --------------------------------------------------------------------------------------------


def test_untraceable_model_falls_back_with_warning(untraceable_model, tiny_inputs, caplog):
    expected, _, _ = gradcam_reference(untraceable_model, "act2", tiny_inputs, None)
    with GradCAM(untraceable_model, "act2") as cam:
        maps = cam(tiny_inputs)
    assert isinstance(cam.notes, list) and len(cam.notes) == 1
    assert "whole network" in cam.notes[0]
    said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(said) == 1 and "torch.fx" in said[0]
    caplog.clear()
    assert (maps - expected).abs().max() <= TOL

    ref_w, acts, _ = ablation_reference(untraceable_model, "act2", tiny_inputs)
    with AblationCAM(untraceable_model, "act2", chunk_size=3) as cam:
        result = cam.explain(tiny_inputs)
    assert isinstance(cam.runner, HookRunner)
    assert (result.weights.double() - ref_w).abs().max() <= TOL
    assert (result.maps - ref_maps(ref_w, acts, (16, 16))).abs().max() <= TOL
    assert any("torch.fx" in r.getMessage() for r in caplog.records)
    _no_hooks(untraceable_model)


def _no_hooks(model):
    leaks = [n for n, m in model.named_modules() if m._forward_hooks or m._forward_pre_hooks]
    assert not leaks, f"hooks left on {leaks}"


class _Unsplittable:
    def __init__(self, *args, **kwargs):
        raise SplitError("forced by the test")


@pytest.fixture
def fresh_split_cache():
    """The construction cache forgets every split before and after the test."""
    clear_cache()
    yield
    clear_cache()


@pytest.mark.parametrize("cls", [GradCAM, AblationCAM])
@pytest.mark.usefixtures("fresh_split_cache")
def test_forced_hook_fallback_gives_same_weights(tiny_model, tiny_inputs, monkeypatch, caplog, cls):
    with cls(tiny_model, "conv3") as cam:
        split = cam.explain(tiny_inputs)
        assert cam.runner.exact_split and cam.runner.num_cached == 1
    assert cam.notes == []
    monkeypatch.setattr(camscope.layers.split, "FxSplit", _Unsplittable)
    clear_cache(tiny_model)  # the split above was kept for this model
    with cls(tiny_model, "conv3") as cam:
        hooked = cam.explain(tiny_inputs)
        assert isinstance(cam.runner, HookRunner)
    assert len(cam.notes) == 1 and "forced by the test" in cam.notes[0]
    said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(said) == 1 and "forced by the test" in said[0]
    assert (split.weights - hooked.weights).abs().max() <= TOL
    assert (split.maps - hooked.maps).abs().max() <= TOL
    with pytest.raises(SplitError):
        split_model(tiny_model, "conv3", tiny_model.conv3, allow_fallback=False)


# --------------------------------------------------------------------------------------------
# Layers followed by in-place operations (regression: ReLU(inplace=True) after the layer)
# --------------------------------------------------------------------------------------------


def test_layer_followed_by_inplace_relu(inplace_model, tiny_inputs):
    targets = top1(inplace_model, tiny_inputs)
    acts, _ = capture(inplace_model, "bn", tiny_inputs)
    assert acts.min() < 0  # the pre-ReLU activations, which the CAM must see
    # Grad-CAM on bn: the gradient w.r.t. bn's output, via the whole model.
    bn_ref = _gradcam_reference_inplace(inplace_model, tiny_inputs, targets)
    ref_w, _, _ = ablation_reference(inplace_model, "bn", tiny_inputs, targets)
    for fallback in (False, True):
        with GradCAM(inplace_model, "bn") as cam:
            if fallback:
                cam._runner = HookRunner(inplace_model, "bn", inplace_model.bn, "test")
            result = cam.explain(tiny_inputs)
        assert (result.maps - bn_ref).abs().max() <= TOL
        with AblationCAM(inplace_model, "bn") as cam:
            if fallback:
                cam._runner = HookRunner(inplace_model, "bn", inplace_model.bn, "test")
            result = cam.explain(tiny_inputs)
        assert (result.weights.double() - ref_w).abs().max() <= TOL
        assert (result.maps - ref_maps(ref_w, acts, (16, 16))).abs().max() <= TOL


def _gradcam_reference_inplace(model, x, targets):
    """Grad-CAM on ``bn`` computed by re-running bn -> relu -> rest by hand (no hooks)."""
    with torch.no_grad():
        acts = model.bn(model.conv(x))
    leaf = acts.clone().requires_grad_(True)
    with torch.enable_grad():
        h = torch.relu(leaf)
        h = torch.relu(model.conv2(h)) + h
        logits = model.fc(torch.flatten(model.pool(h), 1))
        score = sum(logits[n, int(targets[n])] for n in range(len(x)))
        (grads,) = torch.autograd.grad(score, leaf)
    raw = torch.relu((grads.mean(dim=(2, 3))[:, :, None, None] * acts).sum(1))
    return ref_normalise(raw, tuple(x.shape[-2:]))


# --------------------------------------------------------------------------------------------
# AblationCAM
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layer", ["act2", "conv3", "act1"])
def test_ablationcam_matches_brute_force_on_tiny_model(tiny_model, tiny_inputs, layer):
    targets = [1, 4, 0]
    ref_w, acts, _ = ablation_reference(tiny_model, layer, tiny_inputs, targets)
    with AblationCAM(tiny_model, layer, chunk_size=5, ablation_value="zero") as cam:
        result = cam.explain(tiny_inputs, targets)
    assert (result.weights.double() - ref_w).abs().max() <= TOL
    assert (result.maps - ref_maps(ref_w, acts, (16, 16))).abs().max() <= TOL
    assert result.info["ablations"] == 3 * acts.shape[1]


def test_ablationcam_chunk_size_does_not_change_result(tiny_model, tiny_inputs):
    results = [
        AblationCAM(tiny_model, "conv3", chunk_size=c, ablation_value="zero").explain(tiny_inputs)
        for c in (1, 7, None)
    ]
    for other in results[1:]:
        assert (other.weights - results[0].weights).abs().max() <= 1e-6
        assert (other.maps - results[0].maps).abs().max() <= 1e-6


def _check_ablation(model, layer, x, channels, *, full, expect_cached=None):
    """AblationCAM (split tail) vs whole-model brute force on ``channels``.

    ``full``: run AblationCAM over every channel (cheap tails) and also check its maps against
    maps assembled from the whole model's activations; otherwise AblationCAM sees only the
    subset (SubsetRunner).
    """
    ref_w, acts, targets = ablation_reference(model, layer, x, None, channels)
    with AblationCAM(model, layer, ablation_value="zero") as cam:
        runner = cam.runner
        assert runner.exact_split, runner.note
        if expect_cached is not None:
            assert expect_cached(runner.num_cached), runner.note
        if full:
            result = cam.explain(x, targets)
            got = result.weights[:, channels]
            expected = ref_maps(result.weights, acts, tuple(x.shape[-2:]))
            assert (result.maps - expected).abs().max() <= TOL
            raw = _raw(result.weights, acts)  # float32 raw map: relative tolerance
            assert (result.raw.double() - raw).abs().max() <= TOL * max(1.0, raw.abs().max())
        else:
            cam._runner = SubsetRunner(runner, channels)
            got = cam.explain(x, targets).weights
    assert (got.double() - ref_w).abs().max() <= TOL, (got.double() - ref_w).abs().max()


def _raw(weights, acts):
    return torch.relu(torch.einsum("nc,nchw->nhw", weights.double(), acts.double()))


def _subset(channels: int, k: int, seed: int) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(channels, generator=g)[:k].tolist())


@pytest.mark.parametrize(
    "layer, channels, full, k",
    [("layer4[-1]", 512, True, 128), ("layer4[0]", 512, False, 64), ("layer3", 256, False, 64)],
)
def test_ablationcam_matches_brute_force_resnet18(resnet18, x64, layer, channels, full, k):
    _check_ablation(resnet18, layer, x64[:1], _subset(channels, k, 1), full=full)


@pytest.mark.parametrize(
    "layer, channels, full",
    [("layer4[-1]", 2048, True), ("layer4[0]", 2048, False), ("layer3", 1024, False)],
)
def test_ablationcam_matches_brute_force_resnet50(resnet50, x64, layer, channels, full):
    _check_ablation(resnet50, layer, x64[1:], _subset(channels, 48, 2), full=full)


@pytest.mark.parametrize(
    "layer, channels, full, cached",
    [
        ("bn2", 1280, True, lambda n: n == 0),
        ("blocks.5.0", 192, False, None),
        ("blocks.5.1.bn1", 1152, False, lambda n: n >= 1),  # the tail reads the block's input
        ("blocks.5.1.conv_pwl", 192, False, lambda n: n >= 1),
    ],
)
def test_ablationcam_matches_brute_force_lite0(lite0, x64, layer, channels, full, cached):
    _check_ablation(
        lite0, layer, x64[:1], _subset(channels, 16, 3), full=full, expect_cached=cached
    )


# --------------------------------------------------------------------------------------------
# ScoreCAM
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["reference", "pytorch-grad-cam"])
def test_scorecam_matches_loop_reference(constant_model, tiny_inputs, variant):
    targets = [0, 5, 3]
    acts, _ = capture(constant_model, "act1", tiny_inputs)
    faint = acts[:, ConstantChannelNet.FAINT].flatten(1)
    assert (faint.amax(1) > faint.amin(1)).all() and faint.max() < 1e-7
    expected, ref_w = scorecam_reference(constant_model, "act1", tiny_inputs, targets, variant)
    with ScoreCAM(constant_model, "act1", variant=variant, chunk_size=4) as cam:
        result = cam.explain(tiny_inputs, targets)
    assert (result.weights.double() - ref_w).abs().max() <= TOL
    assert (result.maps - expected).abs().max() <= TOL
    constant = [*ConstantChannelNet.ZERO, ConstantChannelNet.HALF]
    assert result.info["constant_channels"] == 3 * len(constant)
    if variant == "reference":
        assert torch.all(result.weights[:, constant] == 0)
        assert result.info["channels_run"] == 3 * (10 - len(constant))
    else:  # every channel shares the softmax; constant ones are scored on the all-zero input
        assert torch.allclose(result.weights.sum(1), torch.ones(3), atol=1e-6)
        assert result.info["channels_run"] == 3 * (10 - len(constant) + 1)
    for tensor in (result.maps, result.raw, result.weights, result.logits):
        assert torch.isfinite(tensor).all()


@pytest.mark.parametrize("variant", ["reference", "pytorch-grad-cam"])
def test_scorecam_runs_each_distinct_mask_once(constant_model, tiny_inputs, variant):
    with torch.no_grad():  # channel 5 = 2 x channel 4 (same normalised map), 6 = channel 4
        w, b = constant_model.conv1.weight, constant_model.conv1.bias
        w[5], b[5] = 2 * w[4], 2 * b[4]
        w[6], b[6] = w[4], b[4]
    targets = [1, 2, 4]
    acts, _ = capture(constant_model, "act1", tiny_inputs)
    assert torch.equal(acts[:, 5], 2 * acts[:, 4]) and torch.equal(acts[:, 6], acts[:, 4])
    expected, ref_w = scorecam_reference(constant_model, "act1", tiny_inputs, targets, variant)
    result = ScoreCAM(constant_model, "act1", variant=variant, chunk_size=3).explain(
        tiny_inputs, targets
    )
    assert (result.weights.double() - ref_w).abs().max() <= TOL
    assert (result.maps - expected).abs().max() <= TOL
    assert torch.equal(result.weights[:, 6], result.weights[:, 4])
    shared = 2 if variant == "reference" else 1
    assert result.info["duplicate_channels"] == 3 * shared
    constant = 3 * 3
    extra = 3 if variant == "pytorch-grad-cam" else 0  # the all-zero input, once per image
    assert result.info["channels_run"] == 3 * 10 - constant - 3 * shared + extra


def test_scorecam_all_constant_layer_gives_empty_maps_without_nan(constant_model, tiny_inputs):
    with torch.no_grad():
        constant_model.conv1.weight.zero_()  # every channel of act1 is now constant
    for variant in ("reference", "pytorch-grad-cam"):
        result = ScoreCAM(constant_model, "act1", variant=variant).explain(tiny_inputs)
        assert result.empty.all()
        assert torch.all(result.maps == 0) and torch.isfinite(result.weights).all()
        if variant == "reference":
            assert torch.all(result.weights == 0)


def test_scorecam_matches_loop_reference_on_resnet18(resnet18, x64):
    x = x64[:1]
    expected, ref_w = scorecam_reference(resnet18, "layer4.1", x, [7], max_channels=6)
    result = ScoreCAM(
        resnet18, "layer4[-1]", variant="reference", max_channels=6, chunk_size=4
    ).explain(x, 7)
    assert (result.weights.double() - ref_w).abs().max() <= TOL
    assert (result.maps - expected).abs().max() <= TOL
    assert int((result.weights != 0).sum()) == 6


@pytest.mark.parametrize("variant", ["reference", "pytorch-grad-cam"])
def test_scorecam_max_channels_keeps_top_variance_channels(constant_model, tiny_inputs, variant):
    targets = [1, 2, 3]
    expected, ref_w = scorecam_reference(
        constant_model, "act1", tiny_inputs, targets, variant, max_channels=3
    )
    result = ScoreCAM(constant_model, "act1", variant=variant, max_channels=3).explain(
        tiny_inputs, targets
    )
    assert ((result.weights != 0).sum(1) <= 3).all()
    assert torch.equal(result.weights != 0, ref_w != 0)
    assert (result.weights.double() - ref_w).abs().max() <= TOL
    assert (result.maps - expected).abs().max() <= TOL
    acts, _ = capture(constant_model, "act1", tiny_inputs)
    for n in range(3):
        var = acts[n].flatten(1).var(1)
        top = set(var.topk(3).indices.tolist())
        assert set(result.weights[n].nonzero().flatten().tolist()) == top


def test_scorecam_matches_pytorch_grad_cam_package(constant_model, tiny_inputs):
    pgc = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    targets = [0, 5, 3]
    acts, _ = capture(constant_model, "act1", tiny_inputs)
    with pgc.ScoreCAM(constant_model, target_layers=[constant_model.act1]) as theirs:
        their_w = theirs.get_cam_weights(
            tiny_inputs,
            constant_model.act1,
            [ClassifierOutputTarget(t) for t in targets],
            acts.numpy(),
            None,
        )
    _no_hooks(constant_model)
    their_w = torch.from_numpy(np.asarray(their_w)).double()
    result = ScoreCAM(constant_model, "act1", variant="pytorch-grad-cam").explain(
        tiny_inputs, targets
    )
    assert (result.weights.double() - their_w).abs().max() <= 1e-4
    assert (result.maps - ref_maps(their_w, acts, (16, 16))).abs().max() <= 1e-4


def test_scorecam_chunk_size_does_not_change_result(constant_model, tiny_inputs):
    for variant in ("reference", "pytorch-grad-cam"):
        results = [
            ScoreCAM(constant_model, "act1", variant=variant, chunk_size=c).explain(tiny_inputs)
            for c in (1, 7, None)
        ]
        for other in results[1:]:
            assert (other.weights - results[0].weights).abs().max() <= 1e-7
            assert (other.maps - results[0].maps).abs().max() <= 1e-7


def test_scorecam_jit_engine_same_maps_and_model_untouched():
    torch.manual_seed(5)
    model = TinyNet(width=12).eval()
    x = torch.randn(2, 3, 24, 24)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cam = ScoreCAM(model, "act2", jit=True)
    on = cam.explain(x)
    assert cam.engine.kind == "onnxruntime fp32"
    off_cam = ScoreCAM(model, "act2", jit=False)
    off = off_cam.explain(x)
    assert off_cam.engine.kind == "eager fp32"
    assert (on.maps - off.maps).abs().max() <= 1e-5
    assert (on.weights - off.weights).abs().max() <= 1e-5
    assert all(p.is_contiguous() for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not model._forward_hooks and not model.training


def test_scorecam_untraceable_model_runs_eagerly_with_note(capsys):
    class Branchy(TinyNet):
        def forward(self, x):
            out = super().forward(x)
            return out if float(out.sum()) > -1e30 else -out  # data-dependent: trace may lie

    torch.manual_seed(5)
    model = Branchy(width=8).eval()
    x = torch.randn(1, 3, 24, 24)
    reference = ScoreCAM(model, "act2", jit=False).explain(x)
    result = ScoreCAM(model, "act2", jit=True).explain(x)
    # tracing a data-dependent branch either fails (eager + note) or bakes the taken branch in;
    # both must give the eager answer here
    assert (result.maps - reference.maps).abs().max() <= 1e-5


def test_scorecam_bf16_close_to_fp32():
    torch.manual_seed(6)
    model = TinyNet(width=16).eval()
    x = torch.randn(2, 3, 32, 32)
    fp32 = ScoreCAM(model, "act2").explain(x, [1, 2])
    bf16 = ScoreCAM(model, "act2", precision="bf16").explain(x, [1, 2])
    assert bf16.maps.dtype == torch.float32 and torch.isfinite(bf16.maps).all()
    for a, b in zip(fp32.maps, bf16.maps, strict=True):
        r = np.corrcoef(a.flatten().numpy(), b.flatten().numpy())[0, 1]
        assert r > 0.9, r


def test_scorecam_fp16_on_cpu_raises(tiny_model, tiny_inputs):
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        ScoreCAM(tiny_model, "act2", precision="fp16").explain(tiny_inputs)
    assert all(p.is_contiguous() for p in tiny_model.parameters())


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"variant": "paper"}, "variant"),
        ({"precision": "int8"}, "precision"),
        ({"max_channels": 0}, "max_channels"),
    ],
)
def test_scorecam_bad_options(tiny_model, kwargs, match):
    with pytest.raises(ValueError, match=match):
        ScoreCAM(tiny_model, "act2", **kwargs)


# --------------------------------------------------------------------------------------------
# Hooks, inputs, misc
# --------------------------------------------------------------------------------------------


ALL = [GradCAM, AblationCAM, ScoreCAM]


@pytest.mark.parametrize("cls", ALL)
def test_no_hooks_left_after_explain_and_after_errors(tiny_model, untraceable_model, cls):
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    bad = torch.randn(2, 4, 16, 16, dtype=torch.float64)  # wrong channel count
    for model in (tiny_model, untraceable_model):
        with cls(model, "act2") as cam:
            assert isinstance(cam, cls)
            cam.explain(x)
            _no_hooks(model)
            with pytest.raises(RuntimeError):
                cam.explain(bad)
            _no_hooks(model)
        assert cam._runner is None
        with pytest.raises(RuntimeError), cls(model, "act2") as cam:
            cam(bad)
        _no_hooks(model)


@pytest.mark.parametrize("cls", ALL)
def test_input_checks(tiny_model, tiny_inputs, cls):
    cam = cls(tiny_model, "act2")
    with pytest.raises(ValueError, match="N, C, H, W"):
        cam(tiny_inputs[0])
    with pytest.raises(ValueError, match="N, C, H, W"):
        cam(tiny_inputs.numpy())
    with pytest.raises(ValueError, match="floating point"):
        cam(tiny_inputs.long())
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        cam(tiny_inputs)


def test_inference_tensors_made_earlier_are_accepted(untraceable_model, capsys):
    with torch.inference_mode():
        x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    expected, _, _ = gradcam_reference(untraceable_model, "act2", x.clone(), None)
    maps = GradCAM(untraceable_model, "act2")(x)  # hook fallback: backward through the head
    assert (maps - expected).abs().max() <= TOL
    capsys.readouterr()


def test_layer_without_feature_map_is_rejected(tiny_model, tiny_inputs):
    with pytest.raises(LayerError, match=r"fc1: output \(1, 16\).*not a spatial map"):
        GradCAM(tiny_model, "fc1").explain(tiny_inputs)


def test_training_mode_model_is_explained_in_eval_mode_and_restored(tiny_model, tiny_inputs):
    expected = GradCAM(tiny_model, "act2")(tiny_inputs, [1, 2, 3])
    tiny_model.train()
    try:
        maps = GradCAM(tiny_model, "act2")(tiny_inputs, [1, 2, 3])
        assert all(m.training for m in tiny_model.modules())
    finally:
        tiny_model.eval()
    assert torch.equal(maps, expected)


def test_layer_given_as_module_and_methods_registry(tiny_model, tiny_inputs):
    cam = GradCAM(tiny_model, tiny_model.conv3)
    assert cam.layer == "conv3"
    assert {"gradcam", "ablationcam", "scorecam"} <= set(METHODS)
    assert all(issubclass(s.cls, BaseCAM) and s.cls.name == n for n, s in METHODS.items())


def test_maps_stay_on_input_device_and_are_float32(tiny_model, tiny_inputs):
    for cls in ALL:
        result = cls(tiny_model, "act2").explain(tiny_inputs)
        assert result.maps.device == tiny_inputs.device
        assert result.maps.dtype == result.raw.dtype == result.weights.dtype == torch.float32
        assert result.targets.dtype == torch.int64 and result.empty.dtype == torch.bool
        assert result.raw.shape == (3, 8, 8) and result.logits.shape == (3, 5)
