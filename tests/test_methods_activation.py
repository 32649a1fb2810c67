"""FEM (Fuad et al., IPTA 2020) against a float64 reference and pytorch-grad-cam 1.5.7."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TinyNet, _make
from test_methods_gradient import grads_and_acts, pearson, ref_finish

from camscope.methods import FEM

pytestmark = pytest.mark.usefixtures("single_thread")


def ref_fem(a: torch.Tensor, k: float) -> torch.Tensor:
    """(N, C, h, w) -> raw (N, h, w): per channel, the share of positions above mean + k sd."""
    out = torch.zeros(a.shape[0], *a.shape[2:], dtype=torch.float64)
    for n in range(a.shape[0]):
        for c in range(a.shape[1]):
            values = a[n, c].flatten().tolist()
            mean = sum(values) / len(values)
            sd = (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5
            share = sum(v > mean + k * sd for v in values) / len(values)
            out[n] += share * a[n, c]
    return out


@pytest.mark.parametrize("k", [0.0, 1.0, 2.0])
@pytest.mark.parametrize("layer", ["act2", "conv3"])
def test_fem_matches_reference(layer, k):
    net = _make(TinyNet, 0, torch.float64)
    torch.manual_seed(11)
    x = torch.randn(3, 3, 16, 16, dtype=torch.float64)
    _, a, _ = grads_and_acts(net, layer, x)
    raw = ref_fem(a, k)
    result = FEM(net, layer, k=k).explain(x)
    assert (result.raw.double() - torch.relu(raw)).abs().max() <= 1e-6 * max(1, raw.abs().max())
    assert (result.maps - ref_finish(raw, (16, 16))).abs().max() <= 1e-5


def test_fem_equals_pytorch_grad_cam():
    pgc = pytest.importorskip("pytorch_grad_cam")
    torch.manual_seed(3)
    model = TinyNet(width=16).eval()
    torch.manual_seed(4)
    x = torch.randn(2, 3, 32, 32)
    theirs = pgc.FEM(model, [model.conv3])(x, None)
    ours = FEM(model, [model.conv3])(x).numpy()
    for n in range(len(x)):
        assert pearson(ours[n], theirs[n]) >= 0.999, n
    assert np.isfinite(ours).all()
