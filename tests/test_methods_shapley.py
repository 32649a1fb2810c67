"""ShapleyCAM (Cai, 2025) against a float64 reference with the full Hessian, and pytorch-grad-cam.

The reference runs the whole model with the layer's output replaced by a free tensor A (a
forward hook), builds the Hessian of the target score in A element by element with
`torch.autograd.functional.hessian`, and forms w = mean(g - H A / 2) directly.
"""

from __future__ import annotations

import pytest
import torch
from conftest import TinyNet, _make
from test_methods_gradient import grads_and_acts, pearson, ref_finish

from camscope.layers import resolve_layer
from camscope.methods import ClassifierOutputReST, GradCAM, ShapleyCAM

pytestmark = pytest.mark.usefixtures("single_thread")


def score_of_layer(model, layer, x, n, target):
    """f(A) = image n's target score with ``layer``'s output replaced by A (whole model)."""
    _, module = resolve_layer(model, layer)

    def f(a):
        handle = module.register_forward_hook(lambda _m, _i, _o: a[None])
        try:
            return target(model(x[n : n + 1])[0])
        finally:
            handle.remove()

    return f


def ref_shapley(model, layer, x, targets):
    _, acts, _ = grads_and_acts(model, layer, x)
    raws, firsts = [], []
    for n in range(len(x)):
        f = score_of_layer(model, layer, x, n, targets[n])
        a = acts[n]
        g = torch.autograd.functional.jacobian(f, a)
        h = torch.autograd.functional.hessian(f, a).reshape(a.numel(), a.numel())
        hvp = (h @ a.flatten()).reshape(a.shape)
        w = (g - 0.5 * hvp).mean(dim=(1, 2))
        raws.append((w[:, None, None] * a).sum(0))
        firsts.append((g.mean(dim=(1, 2))[:, None, None] * a).sum(0))
    return torch.stack(raws), torch.stack(firsts)


@pytest.mark.parametrize("layer", ["act2", "conv3"])
@pytest.mark.parametrize("rest", [False, True])
def test_shapleycam_matches_the_hessian_reference(layer, rest):
    net = _make(TinyNet, 0, torch.float64)
    torch.manual_seed(11)
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    classes = [3, 1]
    if rest:
        targets = [ClassifierOutputReST(c) for c in classes]
    else:
        targets = [lambda row, c=c: row[c] for c in classes]
    raw, first_order = ref_shapley(net, layer, x, targets)
    tol = 1e-6 * raw.abs().max()
    assert (raw - first_order).abs().max() > 100 * tol  # the tanh head: H A matters
    result = ShapleyCAM(net, layer).explain(x, targets)
    assert (result.raw.double() - torch.relu(raw)).abs().max() <= tol
    assert (result.maps - ref_finish(raw, (16, 16))).abs().max() <= 1e-5
    assert result.targets.tolist() == (classes if rest else [-1, -1])


def test_shapleycam_is_gradcam_where_the_tail_is_piecewise_linear():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 6, 3, padding=1),
        torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(6, 3),
    ).double().eval()  # fmt: skip
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    ours = ShapleyCAM(model, "1").explain(x, [0, 2])
    grad = GradCAM(model, "1").explain(x, [0, 2])
    assert (ours.weights - grad.weights).abs().max() <= 1e-12


@pytest.mark.parametrize("layer", ["conv3", "act2"])
def test_shapleycam_equals_pytorch_grad_cam(layer):
    pgc = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputReST as TheirReST

    torch.manual_seed(3)
    model = TinyNet(width=16).eval()
    torch.manual_seed(4)
    x = torch.randn(2, 3, 32, 32)
    module = getattr(model, layer)
    theirs = pgc.ShapleyCAM(model, [module])(x, [TheirReST(3), TheirReST(1)])
    ours = ShapleyCAM(model, [module])(x, [ClassifierOutputReST(3), ClassifierOutputReST(1)])
    for n in range(len(x)):
        assert pearson(ours[n].numpy(), theirs[n]) >= 0.999, n
