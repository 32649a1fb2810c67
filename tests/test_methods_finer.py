"""Finer-CAM (Zhang et al., CVPR 2025): its target and the method, against float64 references
written from the paper's formula and against pytorch-grad-cam 1.5.7."""

from __future__ import annotations

import pytest
import torch
from conftest import TinyNet, _make
from test_methods_gradient import pearson, ref_finish

from camscope.layers import resolve_layer
from camscope.methods import FinerCAM, FinerWeightedTarget, GradCAM

pytestmark = pytest.mark.usefixtures("single_thread")


def finer_reference(row: torch.Tensor, main: int, others: list[int], alpha: float) -> float:
    y = [float(v) for v in row.double()]
    z = sum(torch.exp(torch.tensor(y, dtype=torch.float64))).item()
    p = [float(torch.exp(torch.tensor(v, dtype=torch.float64))) / z for v in y]
    numerator = sum(p[j] * (y[main] - alpha * y[j]) for j in others)
    return numerator / (sum(p[j] for j in others) + 1e-9)


@pytest.mark.parametrize("alpha", [0.0, 0.6, 1.0])
def test_finer_weighted_target_is_the_papers_score(alpha):
    torch.manual_seed(0)
    logits = torch.randn(4, 7, dtype=torch.float64)
    for row in logits:
        target = FinerWeightedTarget(2, [5, 0, 6], alpha)
        assert float(target(row)) == pytest.approx(finer_reference(row, 2, [5, 0, 6], alpha))
    batch = FinerWeightedTarget(1, [3], alpha)(logits)
    expected = [finer_reference(r, 1, [3], alpha) for r in logits]
    assert batch.tolist() == pytest.approx(expected)


def test_finer_weighted_target_equals_pytorch_grad_cam():
    targets = pytest.importorskip("pytorch_grad_cam.utils.model_targets")
    torch.manual_seed(1)
    logits = torch.randn(3, 10)
    for row in logits:
        theirs = targets.FinerWeightedTarget(4, [1, 7, 2], 0.7)(row)
        assert torch.allclose(FinerWeightedTarget(4, [1, 7, 2], 0.7)(row), theirs)


def ref_finer_raw(model, layer, x, mains, positions, alpha):
    """Grad-CAM of the finer score, comparisons sorted by |logit - target logit| (float64)."""
    with torch.no_grad():
        logits = model(x)
    targets = []
    for n, main in enumerate(mains):
        order = sorted(
            range(logits.shape[1]), key=lambda j: abs(float(logits[n, j] - logits[n, main]))
        )
        others = [order[p] for p in positions]

        def score(row, main=main, others=others):
            p = torch.softmax(row, dim=-1)
            num = sum(p[j] * (row[main] - alpha * row[j]) for j in others)
            return num / (sum(p[j] for j in others) + 1e-9)

        targets.append(score)
    _, module = resolve_layer(model, layer)
    store = []
    handle = module.register_forward_hook(lambda _m, _i, out: store.append(out))
    try:
        out = model(x)
        total = sum(targets[n](out[n]) for n in range(len(x)))
        (g,) = torch.autograd.grad(total, store[0])
    finally:
        handle.remove()
    a = store[0].detach()
    return (g.mean(dim=(2, 3))[:, :, None, None] * a).sum(1)


@pytest.mark.parametrize("alpha", [0.0, 0.6, 1.0])
@pytest.mark.parametrize("given", [False, True])
def test_finercam_matches_the_papers_formula(alpha, given):
    net = _make(TinyNet, 0, torch.float64)
    torch.manual_seed(11)
    x = torch.randn(3, 3, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        top = net(x).argmax(1).tolist()
    mains = [4, 0, 2] if given else top
    raw = ref_finer_raw(net, "act2", x, mains, [1, 2, 3], alpha)
    result = FinerCAM(net, "act2", alpha=alpha).explain(x, mains if given else None)
    assert (result.raw.double() - torch.relu(raw)).abs().max() <= 1e-6 * max(1, raw.abs().max())
    assert (result.maps - ref_finish(raw, (16, 16))).abs().max() <= 1e-5
    assert result.targets.tolist() == mains
    assert len(result.raw) == 3


def test_finercam_alpha_zero_is_gradcam_and_call_overrides():
    net = _make(TinyNet, 0, torch.float64)
    torch.manual_seed(11)
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    cam = FinerCAM(net, "act2")
    assert (cam(x, alpha=0.0) - GradCAM(net, "act2")(x)).abs().max() <= 1e-6
    assert cam.alpha == 1.0  # the per-call alpha does not stick
    explicit = [FinerWeightedTarget(1, [0, 2], 0.5), FinerWeightedTarget(3, [4], 0.5)]
    assert (cam(x, explicit) - GradCAM(net, "act2")(x, explicit)).abs().max() <= 1e-6


@pytest.mark.parametrize("alpha", [1.0, 0.6])
def test_finercam_equals_pytorch_grad_cam(alpha):
    pgc = pytest.importorskip("pytorch_grad_cam")
    torch.manual_seed(3)
    model = TinyNet(width=16).eval()
    torch.manual_seed(4)
    x = torch.randn(2, 3, 32, 32)
    theirs = pgc.FinerCAM(model, [model.conv3])(x, None, alpha=alpha)
    ours = FinerCAM(model, [model.conv3])(x, alpha=alpha).numpy()
    for n in range(len(x)):
        assert pearson(ours[n], theirs[n]) >= 0.999, n
