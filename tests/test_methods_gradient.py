"""Gradient and eigen CAMs against float64 references and against pytorch-grad-cam 1.5.

The references run the WHOLE model with a forward hook (never camscope's split), take the
gradient with autograd, and write each method's formula out directly. pytorch-grad-cam's maps
are compared after putting camscope's raw map through pytorch-grad-cam's own post-processing
(min-max, cv2 resize, min-max again), so only the formulas are compared.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import InplaceNet, TinyNet, _make
from torch import nn

from camscope.layers import resolve_layer
from camscope.methods import (
    EigenCAM,
    EigenGradCAM,
    FullGrad,
    GradCAM,
    GradCAMElementWise,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    SmoothGradCAMPlusPlus,
    XGradCAM,
)
from camscope.methods.base import first_component

pytestmark = pytest.mark.usefixtures("single_thread")

TOL = 1e-5


@pytest.fixture(scope="module")
def net():
    return _make(TinyNet, 0, torch.float64)


@pytest.fixture(scope="module")
def x():
    torch.manual_seed(11)
    return torch.randn(3, 3, 16, 16, dtype=torch.float64)


def grads_and_acts(model, layer, x, targets=None, noise=None):
    """(dy_c/dA, A, targets) from a whole-model forward/backward with a hook on ``layer``."""
    _, module = resolve_layer(model, layer)
    store = []
    handle = module.register_forward_hook(lambda _m, _i, out: store.append(out))
    try:
        with torch.enable_grad():
            logits = model(x if noise is None else x + noise)
            targets = logits.argmax(1) if targets is None else torch.as_tensor(targets)
            score = sum(logits[n, int(targets[n])] for n in range(len(x)))
            (grads,) = torch.autograd.grad(score, store[0])
    finally:
        handle.remove()
    return grads.detach(), store[0].detach(), targets


def ref_finish(raw, size):
    """ReLU, bilinear upsample (half-pixel centres), min-max; flat maps -> 0."""
    raw = torch.relu(raw)
    up = F.interpolate(raw[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    out = []
    for m in up:
        lo, hi = m.min(), m.max()
        out.append(torch.zeros_like(m) if hi == lo else (m - lo) / (hi - lo))
    return torch.stack(out)


def ref_pc1(t):
    """First principal component over channels of one (C, h, w) tensor, numpy SVD."""
    flat = t.reshape(t.shape[0], -1).T.numpy()
    flat = flat - flat.mean(axis=0)
    _, _, vt = np.linalg.svd(flat, full_matrices=True)
    proj = torch.from_numpy(flat @ vt[0]).reshape(t.shape[1:])
    mean = t.mean(0)
    if float(((proj - proj.mean()) * (mean - mean.mean())).sum()) < 0:
        proj = -proj
    return proj


def reference(method, model, layer, x, targets=None):
    """Raw (pre-ReLU) map of ``method`` per its paper/pytorch-grad-cam formula, float64."""
    g, a, _ = grads_and_acts(model, layer, x, targets)
    sum_a = a.sum(dim=(2, 3), keepdim=True)
    if method == "gradcam":
        return (g.mean(dim=(2, 3))[:, :, None, None] * a).sum(1)
    if method == "gradcampp":
        alpha = g**2 / (2 * g**2 + sum_a * g**3 + 1e-6)
        alpha[g == 0] = 0
        w = (alpha * torch.relu(g)).sum(dim=(2, 3))
        return (w[:, :, None, None] * a).sum(1)
    if method == "xgradcam":
        w = (g * a / (sum_a + 1e-7)).sum(dim=(2, 3))
        return (w[:, :, None, None] * a).sum(1)
    if method == "hirescam":
        return (g * a).sum(1)
    if method == "gradcam-elementwise":
        return torch.relu(g * a).sum(1)
    if method == "layercam":
        return (torch.relu(g) * a).sum(1)
    if method == "eigencam":
        return torch.stack([ref_pc1(a[n]) for n in range(len(a))])
    if method == "eigengradcam":
        return torch.stack([ref_pc1(g[n] * a[n]) for n in range(len(a))])
    raise AssertionError(method)


CLASSES = {
    "gradcam": GradCAM,
    "gradcampp": GradCAMPlusPlus,
    "xgradcam": XGradCAM,
    "hirescam": HiResCAM,
    "gradcam-elementwise": GradCAMElementWise,
    "layercam": LayerCAM,
    "eigencam": EigenCAM,
    "eigengradcam": EigenGradCAM,
}


@pytest.mark.parametrize("layer", ["act2", "conv3"])
@pytest.mark.parametrize("method", list(CLASSES))
def test_matches_float64_reference(net, x, method, layer):
    targets = [0, 3, 4]
    result = CLASSES[method](net, layer, eigen_sign="mean").explain(x, targets)
    raw = reference(method, net, layer, x, targets)
    assert (result.raw.double() - torch.relu(raw)).abs().max() <= TOL * max(1, raw.abs().max())
    assert (result.maps - ref_finish(raw, (16, 16))).abs().max() <= TOL
    assert result.targets.tolist() == targets


def test_eigen_sign_follows_the_mean_activation_map(net, x):
    result = EigenCAM(net, "act2", eigen_sign="mean").explain(x)
    _, a, _ = grads_and_acts(net, "act2", x)
    for n in range(len(x)):
        r = np.corrcoef(result.raw[n].flatten().numpy(), a[n].mean(0).flatten().numpy())[0, 1]
        assert r > 0 or result.empty[n]


def test_eigen_smooth_is_the_first_component_of_weighted_activations(net, x):
    g, a, _ = grads_and_acts(net, "act2", x, [1, 1, 1])
    w = g.mean(dim=(2, 3))[:, :, None, None]
    expected = torch.stack([ref_pc1(w[n] * a[n]) for n in range(len(a))])
    result = GradCAM(net, "act2", eigen_sign="mean").explain(x, 1, eigen_smooth=True)
    assert (result.raw.double() - torch.relu(expected)).abs().max() <= TOL


def test_smoothgradcampp_matches_reference(net, x):
    """torch-cam's alpha on averaged g^2, g^3 of noisy copies; ReLU of the mean gradient."""
    targets = [2, 0, 1]
    num, std, seed = 3, 0.3, 5
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn((num, 1, 3, 16, 16), generator=gen, dtype=torch.float64) * std
    _, a, _ = grads_and_acts(net, "act2", x, targets)
    gs = [grads_and_acts(net, "act2", x, targets, noise[s])[0] for s in range(num)]
    g1 = sum(gs) / num
    g2 = sum(g**2 for g in gs) / num
    g3 = sum(g**3 for g in gs) / num
    alpha = g2 / (2 * g2 + (g3 * a).sum(dim=(2, 3), keepdim=True) + 1e-8)
    w = (alpha * torch.relu(g1)).sum(dim=(2, 3))
    raw = (w[:, :, None, None] * a).sum(1)
    cam = SmoothGradCAMPlusPlus(net, "act2", num_samples=num, std=std, seed=seed)
    result = cam.explain(x, targets)
    assert (result.weights.double() - w).abs().max() <= TOL * max(1, w.abs().max())
    assert (result.maps - ref_finish(raw, (16, 16))).abs().max() <= TOL
    one = cam.explain(x[1:2], targets[1:2])  # per-image noise: batch == one at a time
    assert (one.maps[0] - result.maps[1]).abs().max() <= 1e-6


def fullgrad_reference(model, x, targets):
    """Every Conv2d/BatchNorm2d with bias, hooked; pytorch-grad-cam's FullGrad formula."""
    layers = [m for m in model.modules() if type(m) in (nn.Conv2d, nn.BatchNorm2d)]
    layers = [m for m in layers if m.bias is not None]
    outs, got = [], {}

    def hook(m, _i, o):  # tensor hooks see the gradient of the value before in-place ops
        k = len(outs)
        outs.append((m, o))
        o.register_hook(lambda g: got.__setitem__(k, g))

    hs = [m.register_forward_hook(hook) for m in layers]
    xi = x.clone().requires_grad_(True)
    try:
        with torch.enable_grad():
            logits = model(xi)
            score = sum(logits[n, targets[n]] for n in range(len(x)))
            score.backward()
    finally:
        for h in hs:
            h.remove()
    grads = [xi.grad] + [got[k] for k in range(len(outs))]

    def psi(t):  # per (n, c): min-max with +1e-7, resize, then sum over channels
        res = torch.zeros(t.shape[0], 16, 16, dtype=torch.float64)
        for n in range(t.shape[0]):
            for c in range(t.shape[1]):
                v = t[n, c] - t[n, c].min()
                v = v / (v.max() + 1e-7)
                res[n] += F.interpolate(v[None, None], size=(16, 16), mode="bilinear")[0, 0]
        return res

    total = psi((grads[0] * x).abs())
    for (m, _), g in zip(outs, grads[1:], strict=True):
        if isinstance(m, nn.BatchNorm2d):
            b = m.bias - m.running_mean * m.weight / torch.sqrt(m.running_var + m.eps)
        else:
            b = m.bias
        total += psi((b.detach()[None, :, None, None] * g).abs())
    return total


@pytest.mark.parametrize("cls", [TinyNet, InplaceNet])
def test_fullgrad_matches_reference(cls, x):
    model = _make(cls, 3, torch.float64)
    targets = [1, 2, 3]
    expected = fullgrad_reference(model, x, targets)
    result = FullGrad(model).explain(x, targets)
    assert (result.raw.double() - expected).abs().max() <= TOL * expected.abs().max()
    assert not any(m._forward_hooks for m in model.modules())


# --------------------------------------------------------------------------------------------
# pytorch-grad-cam 1.5.7
# --------------------------------------------------------------------------------------------


def pgc_post(raw: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from pytorch_grad_cam.utils.image import scale_cam_image

    return scale_cam_image(scale_cam_image(raw, size[::-1]))


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


PGC = {
    "gradcam": "GradCAM",
    "gradcampp": "GradCAMPlusPlus",
    "xgradcam": "XGradCAM",
    "hirescam": "HiResCAM",
    "gradcam-elementwise": "GradCAMElementWise",
    "layercam": "LayerCAM",
    "eigencam": "EigenCAM",
    "eigengradcam": "EigenGradCAM",
}


@pytest.fixture(scope="module")
def pgc_setup():
    pgc = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    torch.manual_seed(3)
    model = TinyNet(width=16).eval()
    torch.manual_seed(4)
    x = torch.randn(2, 3, 32, 32)
    return pgc, ClassifierOutputTarget, model, x


@pytest.mark.parametrize("eigen_smooth", [False, True])
@pytest.mark.parametrize("method", list(PGC))
def test_matches_pytorch_grad_cam(pgc_setup, method, eigen_smooth):
    pgc, target_cls, model, x = pgc_setup
    if eigen_smooth and method in ("eigencam", "eigengradcam"):
        pytest.skip("always a projection")
    targets = [3, 1]
    theirs = getattr(pgc, PGC[method])(model, target_layers=[model.conv3])
    their = theirs(x, [target_cls(t) for t in targets], eigen_smooth=eigen_smooth)
    theirs.activations_and_grads.release()
    ours = CLASSES[method](model, target_layers=[model.conv3])
    result = ours.explain(x, [target_cls(t) for t in targets], eigen_smooth=eigen_smooth)
    mine = pgc_post(result.raw.numpy(), (32, 32))
    flipped = None
    if eigen_smooth or "eigen" in method:
        # pytorch-grad-cam keeps the SVD solver's sign, camscope orients the component: the
        # map with the other sign is ReLU(-projection)
        acts = _acts(model, "conv3", x)
        w = result.weights.double()
        w = w[:, :, None, None] if w.dim() == 2 else w
        projection = first_component(w * acts.double())
        flipped = pgc_post(torch.relu(-projection).float().numpy(), (32, 32))
    for n in range(len(x)):
        r = pearson(mine[n], their[n])
        if flipped is not None:
            r = max(r, pearson(flipped[n], their[n]))
        assert r >= 0.9999, (method, n, r)
    assert not any(m._forward_hooks for m in model.modules())


def _acts(model, layer, x):
    _, module = resolve_layer(model, layer)
    store = []
    handle = module.register_forward_hook(lambda _m, _i, out: store.append(out.detach()))
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    return store[0]


def test_projection_equals_pytorch_grad_cam_up_to_sign(pgc_setup):
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection

    torch.manual_seed(0)
    t = torch.randn(3, 12, 5, 6, dtype=torch.float64) + torch.linspace(0, 3, 30).view(5, 6)
    theirs = get_2d_projection(t.numpy())
    ours = first_component(t).numpy()
    for n in range(3):
        assert abs(pearson(ours[n], theirs[n])) >= 0.9999


def test_fullgrad_matches_pytorch_grad_cam(pgc_setup):
    pgc, target_cls, model, x = pgc_setup
    targets = [0, 4]
    their = pgc.FullGrad(model, [], None)(x, [target_cls(t) for t in targets])
    result = FullGrad(model).explain(x, targets)
    mine = pgc_post(result.raw.numpy(), (32, 32))
    for n in range(len(x)):
        assert pearson(mine[n], their[n]) >= 0.9999


def test_aug_smooth_matches_pytorch_grad_cam(pgc_setup):
    pgc, target_cls, model, x = pgc_setup
    targets = [2, 2]
    their = pgc.GradCAM(model, [model.conv3])(x, [target_cls(t) for t in targets], aug_smooth=True)
    ours = GradCAM(model, model.conv3)(x, targets, aug_smooth=True).numpy()
    for n in range(len(x)):
        assert pearson(ours[n], their[n]) >= 0.9999


def test_multi_layer_fusion_matches_pytorch_grad_cam(pgc_setup):
    pgc, target_cls, model, x = pgc_setup
    layers = [model.conv3, model.act2]
    their = pgc.LayerCAM(model, layers)(x, [target_cls(1)] * 2)
    ours = LayerCAM(model, layers)(x, 1).numpy()
    for n in range(len(x)):
        assert pearson(ours[n], their[n]) >= 0.9999
