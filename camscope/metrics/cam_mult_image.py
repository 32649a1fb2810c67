"""pytorch-grad-cam's CAM-times-image confidence metrics (module path and names of 1.5.7).

The perturbed image is the normalised input multiplied by the map (pytorch-grad-cam's
definition: in normalised space, so a zero map gives the dataset-mean colour, unlike
Grad-CAM++'s Average Drop, which multiplies the [0, 1] image: see
`camscope.metrics.faithfulness.average_drop_increase`). Scores are the targets' outputs
(logits with ``ClassifierOutputTarget``); `DropInConfidence` = ``max(0, before - after)``,
`IncreaseInConfidence` = ``after > before`` (1.0 / 0.0).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from camscope.metrics.perturbation_confidence import PerturbationConfidenceMetric

__all__ = [
    "CamMultImageConfidenceChange",
    "DropInConfidence",
    "IncreaseInConfidence",
    "multiply_tensor_with_cam",
]


def multiply_tensor_with_cam(input_tensor: torch.Tensor, cam: torch.Tensor) -> torch.Tensor:
    """``input * cam``: (C, H, W) x (H, W), or a batch (N, C, H, W) x (N, H, W)."""
    cam = torch.as_tensor(cam, device=input_tensor.device, dtype=input_tensor.dtype)
    return input_tensor * (cam[:, None] if input_tensor.ndim == 4 else cam)


multiply_tensor_with_cam.batch = multiply_tensor_with_cam  # type: ignore[attr-defined]


class CamMultImageConfidenceChange(PerturbationConfidenceMetric):
    """Target score of ``input * cam`` minus that of the input."""

    def __init__(self) -> None:
        super().__init__(multiply_tensor_with_cam)


class DropInConfidence(CamMultImageConfidenceChange):
    """``max(0, score(input) - score(input * cam))`` per image."""

    def __call__(self, *args: Any, **kwargs: Any) -> np.ndarray:
        """float32 (N,)."""
        return np.maximum(-super().__call__(*args, **kwargs), 0)


class IncreaseInConfidence(CamMultImageConfidenceChange):
    """1.0 where ``score(input * cam) > score(input)``, else 0.0."""

    def __call__(self, *args: Any, **kwargs: Any) -> np.ndarray:
        """float32 (N,)."""
        return np.float32(super().__call__(*args, **kwargs) > 0)
