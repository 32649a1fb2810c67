"""Guided back-propagation and Guided Grad-CAM against a hand-written float64 backward pass and
pytorch-grad-cam 1.5.7 (its GuidedBackpropReLUModel and its example's ``cam_mask * gb``).

The reference back-propagates through TinyNet's layers by hand: the transposed convolutions
(`torch.nn.grad.conv2d_input`), the linear layers' matrices, tanh's derivative, and at each ReLU
the guided rule g_in = g_out [z > 0] [g_out > 0].
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import TinyNet, _make
from test_methods_gradient import pearson, ref_finish
from torch import nn

from camscope.methods import GradCAM, GuidedBackprop, GuidedBackpropReLUModel, GuidedGradCAM

pytestmark = pytest.mark.usefixtures("single_thread")


def guided(g: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    return g * (z > 0) * (g > 0)


def ref_guided_backprop(m: TinyNet, x: torch.Tensor, classes: list[int]) -> torch.Tensor:
    """(N, 3, H, W) guided gradient of each image's class logit, by hand."""
    with torch.no_grad():
        z1 = m.conv1(x)
        a1 = torch.relu(z1)
        z2 = m.conv2(a1)
        a2 = torch.relu(z2)
        z3 = a2 + m.conv3(a2)
        a3 = torch.relu(z3)
        t = torch.tanh(m.fc1(a3.mean(dim=(2, 3))))
        gy = F.one_hot(torch.tensor(classes), m.fc2.out_features).to(x)
        gh = (gy @ m.fc2.weight) * (1 - t**2)
        ga3 = (gh @ m.fc1.weight)[:, :, None, None].expand_as(a3) / (a3.shape[2] * a3.shape[3])
        gz3 = guided(ga3, z3)
        ga2 = gz3 + nn.grad.conv2d_input(a2.shape, m.conv3.weight, gz3, padding=1)
        gz2 = guided(ga2, z2)
        ga1 = nn.grad.conv2d_input(a1.shape, m.conv2.weight, gz2, stride=2, padding=1)
        gz1 = guided(ga1, z1)
        return nn.grad.conv2d_input(x.shape, m.conv1.weight, gz1, padding=1)


@pytest.fixture(scope="module")
def setup():
    net = _make(TinyNet, 0, torch.float64)
    torch.manual_seed(11)
    return net, torch.randn(3, 3, 16, 16, dtype=torch.float64)


def test_guided_backprop_matches_the_hand_written_backward(setup):
    net, x = setup
    classes = [4, 0, 2]
    saliency = ref_guided_backprop(net, x, classes).abs().amax(dim=1)
    assert (saliency > 0).any()
    result = GuidedBackprop(net).explain(x, classes)
    assert (result.raw.double() - saliency).abs().max() <= 1e-6 * saliency.abs().max()
    assert (result.maps - ref_finish(saliency, (16, 16))).abs().max() <= 1e-5
    plain = GuidedBackprop(net, "act2").explain(x, classes)  # the layer is ignored
    assert torch.equal(plain.maps, result.maps)


def test_guided_gradcam_is_guided_backprop_times_gradcam(setup):
    net, x = setup
    classes = [4, 0, 2]
    saliency = ref_guided_backprop(net, x, classes).abs().amax(dim=1)
    gradcam = GradCAM(net, "act2").explain(x, classes).maps.double()  # tested in its own file
    result = GuidedGradCAM(net, "act2").explain(x, classes)
    expected = ref_finish(gradcam * saliency, (16, 16))
    assert (result.maps - expected).abs().max() <= 1e-5


def test_pgc_model_class_matches_the_hand_written_backward(setup):
    net, x = setup
    for n in range(len(x)):
        ours = GuidedBackpropReLUModel(net)(x[n : n + 1], 1)
        expected = ref_guided_backprop(net, x[n : n + 1], [1])[0].permute(1, 2, 0).numpy()
        assert np.abs(ours - expected).max() <= 1e-10
    top = int(net(x[:1]).argmax())
    assert np.array_equal(
        GuidedBackpropReLUModel(net)(x[:1]), GuidedBackpropReLUModel(net)(x[:1], top)
    )


def test_model_is_left_as_it_was():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True), nn.Flatten(), nn.LazyLinear(3))
    model(torch.randn(1, 3, 8, 8))
    model.train()
    GuidedBackpropReLUModel(model)(torch.randn(1, 3, 8, 8))
    assert model.training and model[1].inplace and type(model[1]) is nn.ReLU
    assert not any(m._forward_hooks for m in model.modules())


def test_a_model_without_relu_modules_is_said(caplog):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GELU(), nn.Flatten(), nn.Linear(144, 3)).eval()
    with caplog.at_level(logging.WARNING, logger="camscope"):
        cam = GuidedBackprop(model)
        cam(torch.randn(1, 3, 8, 8))
    assert any("no nn.ReLU" in n for n in cam.notes) and "no nn.ReLU" in caplog.text


@pytest.fixture(scope="module")
def pgc_setup():
    pgc = pytest.importorskip("pytorch_grad_cam")
    torchvision = pytest.importorskip("torchvision")

    def make():
        torch.manual_seed(0)
        return torchvision.models.resnet18(num_classes=10).eval()

    torch.manual_seed(1)
    return pgc, make, torch.randn(2, 3, 64, 64)


def test_guided_backprop_equals_pytorch_grad_cam(pgc_setup):
    pgc, make, x = pgc_setup
    ours_model, their_model = make(), make()  # pytorch-grad-cam swaps the ReLUs of its copy
    for n, category in enumerate([3, 7]):
        theirs = pgc.GuidedBackpropReLUModel(their_model, "cpu")(x[n : n + 1].clone(), category)
        ours = GuidedBackpropReLUModel(ours_model)(x[n : n + 1], category)
        assert np.abs(ours - theirs).max() <= 1e-6 * np.abs(theirs).max()
        mine = GuidedBackprop(ours_model)(x[n : n + 1], [category])[0].numpy()
        assert pearson(mine, np.abs(theirs).max(axis=-1)) >= 0.999


def test_guided_gradcam_equals_pytorch_grad_cams_example(pgc_setup):
    pgc, make, x = pgc_setup
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    ours_model, their_model = make(), make()
    for n, category in enumerate([3, 7]):
        image = x[n : n + 1]
        cam_mask = pgc.GradCAM(their_model, [their_model.layer4[-1]])(
            image, [ClassifierOutputTarget(category)]
        )[0]
        gb = pgc.GuidedBackpropReLUModel(their_model, "cpu")(image.clone(), category)
        theirs = np.abs(cam_mask[..., None] * gb).max(axis=-1)
        ours = GuidedGradCAM(ours_model, "layer4[-1]")(image, [category])[0].numpy()
        assert pearson(ours, theirs) >= 0.999
