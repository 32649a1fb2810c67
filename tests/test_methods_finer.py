"""Finer-CAM (Zhang et al., CVPR 2025): its target and the method, against float64 references
written from the paper's formula and against pytorch-grad-cam 1.5.7."""

from __future__ import annotations

import pytest
import torch

from camscope.methods import FinerWeightedTarget

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
