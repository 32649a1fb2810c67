"""Deep Feature Factorization (Collins et al., ECCV 2018) against a reference written from the
paper's definition with the activations of a whole-model hook, a low-rank check of what the
factorisation means, and pytorch-grad-cam 1.5.7."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import TinyNet, _make
from test_methods_gradient import grads_and_acts, pearson

from camscope.methods import DeepFeatureFactorization
from camscope.methods.factorization import dff

pytestmark = [
    pytest.mark.usefixtures("single_thread"),
    pytest.mark.filterwarnings("ignore:Maximum number of iterations"),  # scikit-learn NMF
]
NMF = pytest.importorskip("sklearn.decomposition").NMF


def test_dff_matches_the_definition():
    net = _make(TinyNet, 0, torch.float32)
    torch.manual_seed(11)
    x = torch.randn(3, 3, 16, 16)
    _, a, _ = grads_and_acts(net, "conv3", x)
    n, c, h, w = a.shape
    # channels x (images * positions), each channel shifted to a minimum of 0
    matrix = np.stack([a[:, k].numpy().ravel() for k in range(c)])
    low = matrix.min(axis=1, keepdims=True)
    model = NMF(n_components=4, init="random", random_state=0)
    weights = model.fit_transform(matrix - low)
    heat = model.components_.reshape(4, n, h, w)
    concepts, maps, outputs = DeepFeatureFactorization(net, "conv3", None, lambda t: t.sum(1))(
        x, n_components=4
    )
    assert np.allclose(concepts, weights + low, atol=1e-5)
    assert np.allclose(outputs, (weights + low).sum(0), atol=1e-4)
    for i in range(n):
        for k in range(4):
            m = torch.from_numpy(heat[k, i]).double()
            up = F.interpolate(m[None, None], size=(16, 16), mode="bilinear")[0, 0]
            ref = (up - up.min()) / (up.max() - up.min())
            assert np.abs(maps[i][k] - ref.numpy()).max() <= 1e-5


def test_dff_recovers_a_non_negative_low_rank_layer():
    rng = np.random.default_rng(0)
    parts = rng.random((12, 3)) * 2  # channels x concepts
    heat = rng.random((3, 2 * 5 * 5))  # concepts x (2 images of 5 x 5)
    heat[:, 0] = 0  # one position without any concept: each channel's minimum is the shift
    acts = (parts @ heat).reshape(12, 2, 5, 5).transpose(1, 0, 2, 3) - 0.7
    concepts, explanations = dff(acts.copy(), n_components=3)
    low = acts.transpose(1, 0, 2, 3).reshape(12, -1).min(axis=1)
    rebuilt = (concepts - low[:, None]) @ explanations.transpose(1, 0, 2, 3).reshape(3, -1)
    target = acts.transpose(1, 0, 2, 3).reshape(12, -1) - low[:, None]
    assert np.abs(rebuilt - target).max() <= 1e-2 * target.max()


def test_dff_is_not_a_class_map_and_keeps_the_models_mode():
    net = _make(TinyNet, 0, torch.float32).train()
    factorization = DeepFeatureFactorization(net, "conv3")
    factorization(torch.randn(1, 3, 16, 16), n_components=2)
    assert net.training
    with pytest.raises(TypeError, match="not a class map"):
        factorization.explain(torch.randn(1, 3, 16, 16))


def test_dff_equals_pytorch_grad_cam():
    pgc = pytest.importorskip("pytorch_grad_cam")
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    torch.manual_seed(1)
    x = torch.rand(2, 3, 64, 64)
    ours = DeepFeatureFactorization(model, model.layer4, computation_on_concepts=model.fc)(x, 4)
    theirs = pgc.DeepFeatureFactorization(model, model.layer4, computation_on_concepts=model.fc)(
        x, 4
    )
    assert np.allclose(ours[0], theirs[0], atol=1e-5) and np.allclose(ours[2], theirs[2], atol=1e-4)
    for mine, their in zip(ours[1], theirs[1], strict=True):
        for k in range(4):
            assert pearson(mine[k], their[k]) >= 0.999
