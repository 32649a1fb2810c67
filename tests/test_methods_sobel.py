"""The Sobel edge baseline: sobel_cam against a written-out Sobel filter and OpenCV (as
pytorch-grad-cam 1.5.7 calls it), and the registered SobelCAM against the same formula."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TinyNet, _make
from test_methods_gradient import ref_finish

from camscope.methods import SobelCAM, sobel_cam

pytestmark = pytest.mark.usefixtures("single_thread")

SX = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=float)


def ref_sobel(gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    padded = np.pad(gray, 1, mode="reflect")  # reflect without repeating the edge
    gx, gy = np.zeros(gray.shape), np.zeros(gray.shape)
    for i in range(gray.shape[0]):
        for j in range(gray.shape[1]):
            window = padded[i : i + 3, j : j + 3]
            gx[i, j], gy[i, j] = (window * SX).sum(), (window * SX.T).sum()
    return np.abs(gx), np.abs(gy)


def test_sobel_cam_matches_the_written_out_filter():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (13, 17, 3), dtype=np.uint8)
    r, g, b = (img[..., k].astype(int) for k in range(3))
    gray = (r * 9798 + g * 19235 + b * 3735 + (1 << 14)) >> 15  # OpenCV's fixed-point luma
    gx, gy = ref_sobel(gray.astype(float))
    expected = np.clip(np.rint(0.5 * np.clip(gx, 0, 255) + 0.5 * np.clip(gy, 0, 255)), 0, 255)
    out = sobel_cam(img)
    assert out.dtype == np.uint8 and out.shape == (13, 17)
    assert np.array_equal(out, expected.astype(np.uint8))


def test_sobel_cam_equals_pytorch_grad_cam():
    theirs = pytest.importorskip("pytorch_grad_cam.sobel_cam").sobel_cam
    rng = np.random.default_rng(1)
    for shape in [(32, 32, 3), (17, 23, 3), (64, 48, 3)]:
        img = rng.integers(0, 256, shape, dtype=np.uint8)
        assert np.array_equal(sobel_cam(img), theirs(img))


def test_sobelcam_is_the_edges_of_the_inputs_luma():
    net = _make(TinyNet, 0, torch.float64)
    torch.manual_seed(11)
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    gray = (x * torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64)[:, None, None]).sum(1)
    raw = []
    for g in gray:
        gx, gy = ref_sobel(g.numpy())
        raw.append(torch.from_numpy(0.5 * gx + 0.5 * gy))
    raw = torch.stack(raw)
    result = SobelCAM(net, "act2").explain(x, [0, 1])
    assert (result.raw.double() - raw).abs().max() <= 1e-5 * raw.max()
    assert (result.maps - ref_finish(raw, (16, 16))).abs().max() <= 1e-5
    assert torch.equal(SobelCAM(net).explain(x, [3, 4]).maps, result.maps)  # ignores the target
