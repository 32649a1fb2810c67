"""SS-CAM, IS-CAM, RISE, RandomCAM and AblationCAM's pytorch-grad-cam ablation value, against
float64 loop references (whole model, one masked forward at a time) and pytorch-grad-cam 1.5.7.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import TinyNet, _make

from camscope.layers import resolve_layer
from camscope.methods import ISCAM, RISE, SSCAM, AblationCAM, RandomCAM

pytestmark = pytest.mark.usefixtures("single_thread")

TOL = 1e-5


@pytest.fixture(scope="module")
def net():
    return _make(TinyNet, 0, torch.float64)


@pytest.fixture(scope="module")
def x():
    torch.manual_seed(21)
    return torch.randn(2, 3, 16, 16, dtype=torch.float64)


def acts_of(model, layer, x):
    _, module = resolve_layer(model, layer)
    store = []
    handle = module.register_forward_hook(lambda _m, _i, out: store.append(out.detach().clone()))
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    return store[0]


def ref_mask(a):
    """ScoreCAM reference mask: bilinear upsample to 16x16, then min-max (None if constant)."""
    up = F.interpolate(a[None, None], (16, 16), mode="bilinear")[0, 0]
    return None if up.max() == up.min() else (up - up.min()) / (up.max() - up.min())


def prob(model, inp, c):
    with torch.no_grad():
        return float(torch.softmax(model(inp), dim=1)[0, c])


def finish(weights, acts):
    raw = torch.relu(torch.einsum("nc,nchw->nhw", weights, acts))
    up = F.interpolate(raw[:, None], (16, 16), mode="bilinear")[:, 0]
    lo = up.amin(dim=(1, 2), keepdim=True)
    return (up - lo) / (up.amax(dim=(1, 2), keepdim=True) - lo)


def test_sscam_matches_loop_reference(net, x):
    targets, num, std, seed = [1, 4], 3, 0.5, 9
    noise = torch.randn((num, 1, 3, 16, 16), generator=torch.Generator().manual_seed(seed),
                        dtype=torch.float64) * std  # fmt: skip
    acts = acts_of(net, "act2", x)
    w = torch.zeros(2, acts.shape[1], dtype=torch.float64)
    for n in range(2):
        for k in range(acts.shape[1]):
            m = ref_mask(acts[n, k])
            if m is not None:
                w[n, k] = sum(prob(net, x[n : n + 1] * (m + noise[s]), targets[n])
                              for s in range(num)) / num  # fmt: skip
    cam = SSCAM(net, "act2", num_samples=num, std=std, seed=seed, jit=False)
    result = cam.explain(x, targets)
    assert (result.weights.double() - w).abs().max() <= TOL
    assert (result.maps - finish(w, acts)).abs().max() <= TOL
    assert (cam.explain(x[1:], targets[1:]).maps[0] - result.maps[1]).abs().max() <= 1e-6


def test_iscam_matches_loop_reference(net, x):
    targets, num = [0, 2], 4
    acts = acts_of(net, "act2", x)
    w = torch.zeros(2, acts.shape[1], dtype=torch.float64)
    for n in range(2):
        for k in range(acts.shape[1]):
            m = ref_mask(acts[n, k])
            if m is None:
                continue
            fmap = torch.zeros_like(x[n : n + 1])
            for i in range(num):
                fmap = fmap + (i + 1) / num * x[n : n + 1] * m
                w[n, k] += prob(net, fmap, targets[n])
    result = ISCAM(net, "act2", num_samples=num, jit=False).explain(x, targets)
    assert (result.weights.double() - w).abs().max() <= TOL
    assert (result.maps - finish(w, acts)).abs().max() <= TOL


def test_rise_matches_loop_reference_and_masks_are_rise_masks(net, x):
    cam = RISE(net, rise_masks=70, seed=3, jit=False)  # two blocks of masks (64 + 6)
    masks = torch.cat([cam.masks(b, (16, 16), x) for b in (0, 1)])
    assert masks.shape == (70, 1, 16, 16) and masks.min() >= 0 and masks.max() <= 1
    assert 0.3 < float(masks.mean()) < 0.7  # p = 0.5
    targets = [3, 1]
    expected = torch.zeros(2, 16, 16, dtype=torch.float64)
    for n in range(2):
        for m in masks:
            expected[n] += prob(net, x[n : n + 1] * m, targets[n]) * m[0]
    expected /= 70 * 0.5
    result = cam.explain(x, targets)
    assert (result.raw.double() - expected).abs().max() <= TOL
    again = RISE(net, rise_masks=70, seed=3, jit=False).explain(x, targets)
    assert torch.equal(again.maps, result.maps)
    other = RISE(net, rise_masks=70, seed=4, jit=False).explain(x, targets)
    assert not torch.equal(other.maps, result.maps)


def test_random_cam_is_seeded_and_uses_uniform_channel_weights(net, x):
    a = RandomCAM(net, "act2", seed=1).explain(x)
    b = RandomCAM(net, "act2", seed=1).explain(x)
    c = RandomCAM(net, "act2", seed=2).explain(x)
    assert torch.equal(a.maps, b.maps) and not torch.equal(a.weights, c.weights)
    assert a.weights.abs().max() <= 1 and torch.equal(a.weights[0], a.weights[1])
    acts = acts_of(net, "act2", x)
    raw = torch.relu(torch.einsum("nc,nchw->nhw", a.weights.double(), acts))
    assert (a.raw.double() - raw).abs().max() <= TOL


def test_ablation_value_pytorch_grad_cam(net, x):
    cam = AblationCAM(net, "conv3", ablation_value="pytorch-grad-cam")
    acts = acts_of(net, "conv3", x)
    assert acts.min() < 0
    values = cam._values(acts[0])
    low = float(acts[0].min())
    assert values.tolist() == pytest.approx([low - (k % 32 + 1) * 1e7 for k in range(8)])
    assert torch.equal(cam._values(torch.relu(acts[0])), torch.zeros(8, dtype=acts.dtype))
    with pytest.raises(ValueError, match="ablation_value"):
        AblationCAM(net, "conv3", ablation_value="min")


def test_ablation_value_matches_pytorch_grad_cam_where_activations_are_negative():
    pgc = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.image import scale_cam_image
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    torch.manual_seed(3)
    model = TinyNet(width=40).eval()  # 40 channels: two pytorch-grad-cam batches of 32
    torch.manual_seed(4)
    x = torch.randn(2, 3, 32, 32)
    targets = [3, 1]
    with pgc.AblationCAM(model, [model.conv3]) as theirs:
        their = theirs(x, [ClassifierOutputTarget(t) for t in targets])
    result = AblationCAM(model, "conv3", ablation_value="pytorch-grad-cam").explain(x, targets)
    mine = scale_cam_image(scale_cam_image(result.raw.numpy(), (32, 32)))
    paper = AblationCAM(model, "conv3", ablation_value="zero").explain(x, targets)
    for n in range(2):
        assert np.corrcoef(mine[n].ravel(), their[n].ravel())[0, 1] >= 0.9999
    assert not torch.allclose(paper.weights, result.weights)  # the choice matters here
