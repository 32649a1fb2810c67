"""Seg-Eigen-CAM and KPCA-CAM against float64 references and pytorch-grad-cam 1.5.7.

The references take the activations and gradients from a whole-model forward/backward with a
hook (never camscope's split) and write each paper's formula out: the kernel matrix element by
element, its double centring as H K H, NumPy's eigh/SVD, and the sign rule of Seg-Eigen-CAM's
Eq. 13 (the value of largest magnitude positive).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import TinyNet, _make
from test_methods_gradient import grads_and_acts, pearson, ref_finish

from camscope.methods import KPCA_CAM, SegEigenCAM
from camscope.methods.eigen import KERNELS

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def net():
    return _make(TinyNet, 0, torch.float64)


@pytest.fixture(scope="module")
def x():
    torch.manual_seed(11)
    return torch.randn(3, 3, 16, 16, dtype=torch.float64)


def eq13(p: np.ndarray) -> np.ndarray:
    return -p if abs(p.min()) > abs(p.max()) else p


def ref_kernel(a: np.ndarray, b: np.ndarray, kernel: str, gamma: float) -> float:
    if kernel == "linear":
        return float(a @ b)
    if kernel == "poly":
        return (gamma * float(a @ b) + 1) ** 3
    if kernel == "sigmoid":
        return math.tanh(gamma * float(a @ b) + 1)
    if kernel == "rbf":
        return math.exp(-gamma * float(((a - b) ** 2).sum()))
    return float(a @ b) / (np.linalg.norm(a) * np.linalg.norm(b))


def ref_kpca(acts: np.ndarray, kernel: str, gamma: float | None) -> np.ndarray:
    """(C, h, w) -> (h, w), kernel PCA written out."""
    rows = acts.reshape(acts.shape[0], -1).T
    rows = rows - rows.mean(axis=0)
    n = len(rows)
    g = 1 / acts.shape[0] if gamma is None else gamma
    k = np.array([[ref_kernel(rows[i], rows[j], kernel, g) for j in range(n)] for i in range(n)])
    h = np.eye(n) - np.full((n, n), 1 / n)
    values, vectors = np.linalg.eigh(h @ k @ h)
    return eq13(vectors[:, -1] * math.sqrt(max(values[-1], 0))).reshape(acts.shape[1:])


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("gamma", [None, 0.3])
def test_kpca_matches_the_written_out_kernel_pca(net, x, kernel, gamma):
    _, a, _ = grads_and_acts(net, "act2", x)
    result = KPCA_CAM(net, "act2", kernel=kernel, gamma=gamma).explain(x)
    raw = torch.stack([torch.from_numpy(ref_kpca(m.numpy(), kernel, gamma)) for m in a])
    assert (result.raw.double() - torch.relu(raw)).abs().max() <= 1e-5 * max(1, raw.abs().max())
    assert (result.maps - ref_finish(raw, (16, 16))).abs().max() <= 1e-5


def test_kpca_rejects_an_unknown_kernel(net):
    with pytest.raises(ValueError, match="kernel must be one of"):
        KPCA_CAM(net, "act2", kernel="laplacian")


@pytest.mark.parametrize("layer", ["act2", "conv3"])
def test_segeigencam_matches_the_papers_formula(net, x, layer):
    targets = [0, 3, 4]
    g, a, _ = grads_and_acts(net, layer, x, targets)
    refs = []
    for n in range(len(x)):
        t = (np.abs(g[n].numpy()) * a[n].numpy()).reshape(a.shape[1], -1).T
        t = t - t.mean(axis=0)
        _, _, vt = np.linalg.svd(t, full_matrices=True)
        refs.append(torch.from_numpy(eq13(t @ vt[0]).reshape(a.shape[2:])))
    raw = torch.stack(refs)
    result = SegEigenCAM(net, layer).explain(x, targets)
    assert (result.raw.double() - torch.relu(raw)).abs().max() <= 1e-5 * max(1, raw.abs().max())
    assert (result.maps - ref_finish(raw, (16, 16))).abs().max() <= 1e-5
    assert (result.weights.double() - g.abs()).abs().max() <= 1e-6


@pytest.fixture(scope="module")
def pgc_setup():
    pgc = pytest.importorskip("pytorch_grad_cam")
    pytest.importorskip("sklearn")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    torch.manual_seed(3)
    model = TinyNet(width=16).eval()
    torch.manual_seed(4)
    x = torch.randn(2, 3, 32, 32)
    return pgc, ClassifierOutputTarget, model, x


@pytest.mark.parametrize("kernel", KERNELS)
def test_kpca_equals_pytorch_grad_cam(pgc_setup, kernel):
    pgc, _, model, x = pgc_setup
    theirs = pgc.KPCA_CAM(model, [model.conv3], kernel=kernel)(x, None)
    ours = KPCA_CAM(model, [model.conv3], kernel=kernel)(x).numpy()
    for n in range(len(x)):
        assert pearson(ours[n], theirs[n]) >= 0.999, (kernel, n)


def test_segeigencam_equals_pytorch_grad_cam(pgc_setup):
    pgc, target, model, x = pgc_setup
    theirs = pgc.SegEigenCAM(model, [model.conv3])(x, [target(3), target(1)])
    ours = SegEigenCAM(model, [model.conv3])(x, [3, 1]).numpy()
    for n in range(len(x)):
        assert pearson(ours[n], theirs[n]) >= 0.999, n
