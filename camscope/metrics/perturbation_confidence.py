"""pytorch-grad-cam's perturbation-confidence metrics (module path and signatures of 1.5.7).

``from camscope.metrics.perturbation_confidence import PerturbationConfidenceMetric, ...``
works as ``pytorch_grad_cam.metrics.perturbation_confidence`` does; the work is batched:
a perturbation with a ``batch(inputs, cams)`` method (every one in camscope) perturbs the whole
batch at once, and the model runs once per chunk of `CHUNK` images. Scores follow
pytorch-grad-cam: ``target(output_row)`` of each image's target object (e.g.
``ClassifierOutputTarget(c)``: the logit, not a probability), and by default the difference
``score(perturbed) - score(original)``.

`RemoveMostRelevantFirst(percentile, imputer)` keeps the pixels whose map value is below the
map's ``percentile``-th percentile (``np.percentile``, linear interpolation) and imputes the
others, i.e. it removes the most relevant ``100 - percentile`` %; `RemoveLeastRelevantFirst`
does the same on ``1 - map``. ``percentile="auto"`` keeps the pixels above Otsu's threshold of
the map in uint8 (scikit-image's `threshold_otsu`, where pytorch-grad-cam uses OpenCV's).
For ROAD on camscope's own terms (exact removed fractions, probabilities) see
`camscope.metrics.removal`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

__all__ = [
    "CHUNK",
    "AveragerAcrossThresholds",
    "PerturbationConfidenceMetric",
    "RemoveLeastRelevantFirst",
    "RemoveMostRelevantFirst",
    "keep_masks",
    "target_scores",
]

#: Images per forward pass of these metrics.
CHUNK = 64

_DEFAULT_PERCENTILES = (10, 20, 30, 40, 50, 60, 70, 80, 90)


def target_scores(
    model: Callable[[torch.Tensor], torch.Tensor],
    inputs: torch.Tensor,
    targets: Sequence[Callable] | None,
) -> np.ndarray:
    """float32 (N,) ``target_i(model(inputs)[i])``; ``targets=None``: the top-1 logit."""
    with torch.no_grad():
        outputs = torch.cat([model(inputs[s : s + CHUNK]) for s in range(0, len(inputs), CHUNK)])
    if targets is None:
        return outputs.float().amax(dim=1).cpu().numpy()
    if len(targets) != len(outputs):
        raise ValueError(f"{len(targets)} targets for {len(outputs)} images")
    # one call per image: a target is an arbitrary callable on its image's output row
    return np.float32([t(o).detach().cpu().numpy() for t, o in zip(targets, outputs, strict=True)])


def keep_masks(cams: np.ndarray, percentile: float | str) -> np.ndarray:
    """(N, H, W) float32, 1 where a pixel is kept: below the map's ``percentile``-th percentile.

    ``"auto"``: above Otsu's threshold of ``uint8(cam * 255)``.
    """
    cams = np.asarray(cams, dtype=np.float32)
    flat = cams.reshape(len(cams), -1)
    if percentile == "auto":
        from skimage.filters import threshold_otsu

        levels = np.uint8(flat * 255)
        # Otsu's threshold is a per-histogram search: one call per map
        thresholds = np.array([threshold_otsu(v) if v.min() < v.max() else v[0] for v in levels])
        return np.float32(levels > thresholds[:, None]).reshape(cams.shape)
    thresholds = np.percentile(flat, float(percentile), axis=1)
    return np.float32(flat < thresholds[:, None]).reshape(cams.shape)


class PerturbationConfidenceMetric:
    """Score change of the targets when each image is perturbed by its CAM."""

    def __init__(self, perturbation: Callable) -> None:
        self.perturbation = perturbation

    def perturb(self, input_tensor: torch.Tensor, cams: np.ndarray) -> torch.Tensor:
        """The perturbed batch (batched when the perturbation has ``batch``)."""
        batch = getattr(self.perturbation, "batch", None)
        if batch is not None:
            return batch(input_tensor, cams).to(input_tensor.device)
        # a user's per-image callable, as pytorch-grad-cam calls it
        return torch.stack(
            [
                self.perturbation(input_tensor[i].cpu(), torch.from_numpy(np.asarray(cams[i])))
                for i in range(len(input_tensor))
            ]
        ).to(input_tensor.device)

    def __call__(
        self,
        input_tensor: torch.Tensor,
        cams: np.ndarray,
        targets: Sequence[Callable] | None,
        model: torch.nn.Module,
        return_visualization: bool = False,
        return_diff: bool = True,
    ) -> Any:
        """Scores after perturbation (minus before with ``return_diff``), float32 (N,)."""
        perturbed = self.perturb(input_tensor, cams)
        result = target_scores(model, perturbed, targets)
        if return_diff:
            result = result - target_scores(model, input_tensor, targets)
        return (result, perturbed) if return_visualization else result


class RemoveMostRelevantFirst:
    """Impute the pixels at or above the map's ``percentile``-th percentile."""

    def __init__(self, percentile: float | str, imputer: Callable) -> None:
        self.percentile = percentile
        self.imputer = imputer

    def _cams(self, cams: np.ndarray) -> np.ndarray:
        return np.asarray(cams, dtype=np.float32)

    def __call__(self, input_tensor: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """One image (C, H, W) and its map (H, W), as pytorch-grad-cam."""
        return self.batch(input_tensor[None], mask.cpu().numpy()[None])[0]

    def batch(self, inputs: torch.Tensor, cams: np.ndarray) -> torch.Tensor:
        """A batch (N, C, H, W) and its maps (N, H, W) at once."""
        keep = torch.from_numpy(keep_masks(self._cams(cams), self.percentile))
        impute_batch = getattr(self.imputer, "batch", None)
        if impute_batch is not None:
            return impute_batch(inputs.cpu(), keep)
        return torch.stack([self.imputer(x, k) for x, k in zip(inputs.cpu(), keep, strict=True)])


class RemoveLeastRelevantFirst(RemoveMostRelevantFirst):
    """Impute the least relevant pixels: `RemoveMostRelevantFirst` on ``1 - map``."""

    def _cams(self, cams: np.ndarray) -> np.ndarray:
        return 1 - np.asarray(cams, dtype=np.float32)


class AveragerAcrossThresholds:
    """Mean over ``percentiles`` of ``imputer(percentile)(...)`` (a metric class)."""

    def __init__(self, imputer: Callable, percentiles: Sequence = _DEFAULT_PERCENTILES) -> None:
        self.imputer = imputer
        self.percentiles = list(percentiles)

    def __call__(
        self,
        input_tensor: torch.Tensor,
        cams: np.ndarray,
        targets: Sequence[Callable] | None,
        model: torch.nn.Module,
    ) -> np.ndarray:
        """float32 (N,) mean score over the percentiles."""
        base = target_scores(model, input_tensor, targets)
        scores = []
        for percentile in self.percentiles:
            metric = self.imputer(percentile)
            after = metric(input_tensor, cams, targets, model, return_diff=False)
            scores.append(after - base)
        return np.mean(np.float32(scores), axis=0)
