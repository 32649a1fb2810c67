"""pytorch-grad-cam's ROAD metrics (module path and signatures of 1.5.7), batched.

``ROADMostRelevantFirst(percentile=80)`` keeps the pixels below the map's 80th percentile and
imputes the rest (removes the most relevant 20 %); ``ROADLeastRelevantFirst(percentile=20)``
removes the least relevant 80 %; the ``*Average`` classes average over percentiles 10..90 and
`ROADCombined` returns ``(LeRF average - MoRF average) / 2``. Scores are differences of the
targets' outputs (see `camscope.metrics.perturbation_confidence`). The imputation is camscope's
(`camscope.metrics.removal.noisy_linear_impute`: one sparse solve per batch, the same linear
system as the authors' code); for ROAD on the paper's exact removed fractions with target-class
probabilities use `camscope.metrics.removal.road`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from camscope.metrics.perturbation_confidence import (
    AveragerAcrossThresholds,
    PerturbationConfidenceMetric,
    RemoveLeastRelevantFirst,
    RemoveMostRelevantFirst,
)
from camscope.metrics.removal import NEIGHBOUR_WEIGHTS, ROAD_NOISE, noisy_linear_impute

__all__ = [
    "NoisyLinearImputer",
    "ROADCombined",
    "ROADLeastRelevantFirst",
    "ROADLeastRelevantFirstAverage",
    "ROADMostRelevantFirst",
    "ROADMostRelevantFirstAverage",
    "neighbors_weights",
]

#: pytorch-grad-cam's name and layout: ((row offset, column offset), weight).
neighbors_weights = [((dr, dc), w) for dr, dc, w in NEIGHBOUR_WEIGHTS]
_PERCENTILES = (10, 20, 30, 40, 50, 60, 70, 80, 90)


class NoisyLinearImputer:
    """ROAD's noisy linear imputation; ``mask`` is 1 where a pixel is KEPT (pgc's convention).

    Only the paper's 8-neighbour weights are supported (as in pytorch-grad-cam, which ignores
    its ``weighting`` argument).
    """

    def __init__(self, noise: float = ROAD_NOISE, weighting: Sequence | None = None) -> None:
        self.noise = noise
        self.weighting = neighbors_weights

    def batch(self, images: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) images, (N, H, W) keep masks -> imputed images."""
        return noisy_linear_impute(images, torch.as_tensor(keep) < 0.5, noise=self.noise)

    def __call__(self, img: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """One (C, H, W) image and its (H, W) keep mask."""
        return self.batch(img[None], torch.as_tensor(mask)[None])[0]


class ROADMostRelevantFirst(PerturbationConfidenceMetric):
    """Score change after imputing the pixels above the ``percentile``-th percentile."""

    def __init__(self, percentile: float | str = 80) -> None:
        super().__init__(RemoveMostRelevantFirst(percentile, NoisyLinearImputer()))


class ROADLeastRelevantFirst(PerturbationConfidenceMetric):
    """Score change after imputing the pixels below the ``percentile``-th percentile of 1 - map."""

    def __init__(self, percentile: float | str = 20) -> None:
        super().__init__(RemoveLeastRelevantFirst(percentile, NoisyLinearImputer()))


class ROADMostRelevantFirstAverage(AveragerAcrossThresholds):
    """`ROADMostRelevantFirst` averaged over ``percentiles``."""

    def __init__(self, percentiles: Sequence = _PERCENTILES) -> None:
        super().__init__(ROADMostRelevantFirst, percentiles)


class ROADLeastRelevantFirstAverage(AveragerAcrossThresholds):
    """`ROADLeastRelevantFirst` averaged over ``percentiles``."""

    def __init__(self, percentiles: Sequence = _PERCENTILES) -> None:
        super().__init__(ROADLeastRelevantFirst, percentiles)


class ROADCombined:
    """``(LeRF average - MoRF average) / 2`` per image."""

    def __init__(self, percentiles: Sequence = _PERCENTILES) -> None:
        self.percentiles = list(percentiles)
        self.morf_averager = ROADMostRelevantFirstAverage(percentiles)
        self.lerf_averager = ROADLeastRelevantFirstAverage(percentiles)

    def __call__(
        self,
        input_tensor: torch.Tensor,
        cams: np.ndarray,
        targets: Sequence[Callable] | None,
        model: torch.nn.Module,
    ) -> np.ndarray:
        """float32 (N,)."""
        scores_lerf = self.lerf_averager(input_tensor, cams, targets, model)
        scores_morf = self.morf_averager(input_tensor, cams, targets, model)
        return (scores_lerf - scores_morf) / 2
