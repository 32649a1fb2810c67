"""pytorch-grad-cam's ARCC metric (module path and signatures of 1.5.7).

ARCC is the harmonic mean of three scores in [0, 1]: ``1 - Complexity`` (Complexity = mean
absolute map value), Coherency (``(r + 1) / 2`` with r the Pearson correlation between the map
and the map the same method gives on ``input * map``) and ROAD (`ROADCombined` at percentiles
20, 40, 60, 80, doubled and clipped to [0, 1]):
``ARCC = 3 / (1 / coherency + 1 / (1 - complexity) + 1 / road)`` (1e-8 added to each
denominator). ``base_method`` is any CAM object called as ``cam(input_tensor=, targets=)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from camscope.metrics.road import ROADCombined

__all__ = ["ARCC", "Coherency", "Complexity", "batch_pearson_coherency"]


def batch_pearson_coherency(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of each pair of maps, (N,) (1e-8 added to the denominator)."""
    a = np.asarray(a, dtype=np.float64).reshape(len(a), -1)
    b = np.asarray(b, dtype=np.float64).reshape(len(b), -1)
    ac, bc = a - a.mean(axis=1, keepdims=True), b - b.mean(axis=1, keepdims=True)
    n = a.shape[1] - 1
    cov = (ac * bc).sum(axis=1) / n
    std_a, std_b = np.sqrt((ac**2).sum(axis=1) / n), np.sqrt((bc**2).sum(axis=1) / n)
    return cov / (std_a * std_b + 1e-8)


class Complexity:
    """Mean absolute value of each map, (N,) in [0, 1] for maps in [0, 1]."""

    def __call__(self, grayscale_cams: np.ndarray) -> np.ndarray:
        """(N,) mean |map|."""
        flat = np.asarray(grayscale_cams).reshape(len(grayscale_cams), -1)
        return np.abs(flat).sum(axis=1) / flat.shape[1]


class Coherency:
    """``(pearson(map, base_method(input * map)) + 1) / 2`` per image."""

    def __call__(
        self,
        input_tensor: torch.Tensor,
        grayscale_cams: np.ndarray,
        targets: Sequence[Callable] | None,
        model: torch.nn.Module,
        base_method: Callable,
    ) -> np.ndarray:
        """(N,) in [0, 1]."""
        cams = torch.as_tensor(np.asarray(grayscale_cams), device=input_tensor.device)
        mixed = input_tensor * cams[:, None].to(input_tensor.dtype)
        mixed_cams = base_method(input_tensor=mixed, targets=targets)
        mixed_cams = np.asarray(
            mixed_cams.detach().cpu() if isinstance(mixed_cams, torch.Tensor) else mixed_cams
        )
        return (batch_pearson_coherency(mixed_cams, grayscale_cams) + 1) / 2


class ARCC:
    """Harmonic mean of coherency, 1 - complexity and ROAD (pytorch-grad-cam 1.5.7)."""

    def __init__(self, base_method: Callable, road_percentiles: Sequence = (20, 40, 60, 80)):
        self.complexity = Complexity()
        self.coherency = Coherency()
        self.road = ROADCombined(percentiles=road_percentiles)
        self.base_method = base_method

    def __call__(
        self,
        input_tensor: torch.Tensor,
        grayscale_cams: np.ndarray,
        targets: Sequence[Callable] | None,
        model: torch.nn.Module,
    ) -> np.ndarray:
        """(N,) ARCC in [0, 1]."""
        complexity = self.complexity(grayscale_cams)
        coherency = self.coherency(input_tensor, grayscale_cams, targets, model, self.base_method)
        road = (self.road(input_tensor, grayscale_cams, targets, model) * 2).clip(0, 1)
        inverse = 1 / (coherency + 1e-8) + 1 / ((1 - complexity) + 1e-8) + 1 / (road + 1e-8)
        return 3 / inverse
