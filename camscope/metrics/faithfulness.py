"""Faithfulness of class activation maps: Average Drop / Increase, Deletion / Insertion.

Conventions shared by every function:

- ``model``: an ``nn.Module`` returning logits (N, K); it is only run, never changed.
- ``inputs``: (N, 3, H, W) float tensor normalised as ``(x - mean) / std`` with ``x`` the [0, 1]
  image, ``mean``/``std`` 3-tuples.
- ``maps``: (N, H, W) saliency in [0, 1] at the input resolution.
- ``targets``: LongTensor (N,) of class indices. Every probability is the softmax probability
  ``p_c = softmax(f(x))_c`` of the target class, computed in float32.

Everything stays a torch tensor on the inputs' device; forward passes run under
``torch.inference_mode`` in chunks of ``batch_size`` images.

Papers:

- Average Drop / Increase in Confidence: Chattopadhyay et al., "Grad-CAM++", WACV 2018,
  https://arxiv.org/abs/1710.11063
- Deletion / Insertion: Petsiuk et al., "RISE", BMVC 2018, https://arxiv.org/abs/1806.07421
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

#: Deletion/insertion curve resolution: ``steps`` perturbation steps, ``steps + 1`` curve points,
#: ``ceil(H * W / steps)`` pixels per step (1568 at 224x224, where 32 divides the pixel count so
#: every step removes the same number of pixels). `step_sensitivity` and
#: ``benchmarks/step_sensitivity.py`` measure how far the AUCs move against RISE's 224 pixels per
#: step (224 steps at 224x224); the measurements are in EVALUATION.md. 32 steps cost 65 forward
#: passes per image and method against 101 for 50 and 449 for 224.
DEFAULT_STEPS = 32
#: RISE's insertion blur: an 11x11 Gaussian with sigma 5 (applied in normalised space).
BLUR_KERNEL_SIZE = 11
BLUR_SIGMA = 5.0


def _accumulate_dtype(device: torch.device) -> torch.dtype:
    """float64 for reductions, except on backends without it (MPS)."""
    return torch.float32 if device.type == "mps" else torch.float64


def _stats(values: Sequence[float], like: torch.Tensor) -> torch.Tensor:
    """A 3-tuple of channel statistics as a (1, 3, 1, 1) tensor matching ``like``."""
    return torch.as_tensor(values, dtype=like.dtype, device=like.device).view(1, -1, 1, 1)


def _check(
    inputs: torch.Tensor, maps: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate shapes; return ``maps`` and ``targets`` (int64) on the inputs' device."""
    if inputs.ndim != 4:
        raise ValueError(f"inputs must be (N, C, H, W), got {tuple(inputs.shape)}")
    n, _, h, w = inputs.shape
    if tuple(maps.shape) != (n, h, w):
        raise ValueError(f"maps must be {(n, h, w)} to match inputs, got {tuple(maps.shape)}")
    if tuple(targets.shape) != (n,):
        raise ValueError(f"targets must be ({n},), got {tuple(targets.shape)}")
    return maps.to(inputs.device), targets.to(device=inputs.device, dtype=torch.long)


def _target_logit_probs(
    model: nn.Module, batch: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    """softmax(model(batch))[i, targets[i]] in float32. Call under inference mode."""
    logits = model(batch)
    return logits.float().softmax(dim=-1).gather(1, targets[:, None]).squeeze(1)


def _chunked_probs(
    model: nn.Module,
    total: int,
    make_batch: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    batch_size: int,
    device: torch.device,
) -> torch.Tensor:
    """Run ``make_batch(idx) -> (batch, targets)`` over ``range(total)`` in chunks.

    Returns the (total,) float32 target-class probabilities.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    out = torch.empty(total, dtype=torch.float32, device=device)
    with torch.inference_mode():
        for start in range(0, total, batch_size):
            idx = torch.arange(start, min(start + batch_size, total), device=device)
            batch, tg = make_batch(idx)
            out[start : start + len(idx)] = _target_logit_probs(model, batch, tg)
    return out


# --------------------------------------------------------------------------------------------
# Average Drop / Increase in Confidence (Grad-CAM++)


def target_probabilities(
    model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, *, batch_size: int = 64
) -> torch.Tensor:
    """``p_c(x) = softmax(model(x))_c`` for each image, (N,) float32."""
    targets = targets.to(inputs.device)
    return _chunked_probs(
        model, len(inputs), lambda i: (inputs[i], targets[i]), batch_size, inputs.device
    )


def explanation_inputs(
    inputs: torch.Tensor,
    maps: torch.Tensor,
    *,
    mean: Sequence[float],
    std: Sequence[float],
) -> torch.Tensor:
    """The Grad-CAM++ "explanation map" ``E = x * M`` in pixel space, normalised again.

    ``x = inputs * std + mean`` is the [0, 1] image, ``M`` the saliency map broadcast over the
    channels; returns ``(x * M - mean) / std``. Pixels where ``M = 0`` become black (not the
    dataset mean: that is the deletion baseline).
    """
    m, s = _stats(mean, inputs), _stats(std, inputs)
    pixels = inputs * s + m
    return (pixels * maps[:, None].to(device=inputs.device, dtype=inputs.dtype) - m) / s


class DropIncrease(NamedTuple):
    """Per-image terms of Average Drop and Increase in Confidence.

    ``average_drop = max(0, Y - O) / Y`` and ``increase = O > Y`` with ``Y = p_c(x)`` and
    ``O = p_c(explanation)``; the dataset-level scores are ``100 * mean`` of each.
    """

    base_prob: torch.Tensor
    explanation_prob: torch.Tensor
    average_drop: torch.Tensor
    increase: torch.Tensor


def average_drop_increase(
    model: nn.Module,
    inputs: torch.Tensor,
    maps: torch.Tensor,
    targets: torch.Tensor,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int = 64,
    base_prob: torch.Tensor | None = None,
) -> DropIncrease:
    """Average Drop and Increase in Confidence per image (Chattopadhyay et al., WACV 2018).

    ``Y_i = p_c(x_i)``, ``O_i = p_c(E_i)`` with ``E_i`` from `explanation_inputs`;
    ``drop_i = max(0, Y_i - O_i) / Y_i`` (``Y_i`` clamped to the smallest positive float32 so a
    zero probability cannot divide by zero) and ``increase_i = O_i > Y_i``. Dataset-level
    "Average Drop %" = ``100 * mean(drop)``, "Increase in Confidence %" = ``100 * mean(increase)``.

    ``base_prob`` (N,): pass `target_probabilities` already computed to skip that pass.
    """
    maps, targets = _check(inputs, maps, targets)
    if base_prob is None:
        base_prob = target_probabilities(model, inputs, targets, batch_size=batch_size)

    def make(idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return explanation_inputs(inputs[idx], maps[idx], mean=mean, std=std), targets[idx]

    expl = _chunked_probs(model, len(inputs), make, batch_size, inputs.device)
    base = base_prob.to(device=inputs.device, dtype=torch.float32)
    drop = (base - expl).clamp_min(0) / base.clamp_min(torch.finfo(torch.float32).tiny)
    return DropIncrease(base, expl, drop, expl > base)


# --------------------------------------------------------------------------------------------
# Deletion / Insertion (RISE)


def saliency_rank(maps: torch.Tensor) -> torch.Tensor:
    """Rank of each pixel by decreasing saliency, (N, H, W) int64; 0 = most salient.

    Ties are broken by the flat pixel index (row-major), lower index first: a stable descending
    sort. The set of the k most salient pixels is ``rank < k``.
    """
    n = maps.shape[0]
    flat = maps.reshape(n, -1)
    order = torch.sort(flat, dim=1, descending=True, stable=True).indices
    rank = torch.empty_like(order)
    positions = torch.arange(flat.shape[1], device=maps.device).expand(n, -1)
    rank.scatter_(1, order, positions)
    return rank.view(maps.shape)


def gaussian_blur(
    inputs: torch.Tensor, kernel_size: int = BLUR_KERNEL_SIZE, sigma: float = BLUR_SIGMA
) -> torch.Tensor:
    """Per-channel Gaussian blur with reflect padding (RISE's insertion start image).

    Kernel ``g(t) = exp(-t^2 / (2 sigma^2))`` for ``t = -(k//2) .. k//2``, normalised to sum 1,
    applied separably (rows then columns, which equals the 2-D kernel ``g g^T``). RISE's code
    builds its 11x11 kernel by smoothing a delta with ``scipy.ndimage.gaussian_filter`` and
    zero-pads; we use the plain truncated Gaussian and reflect padding so borders do not darken
    towards the normalised-space zero. Needs H, W > kernel_size // 2.
    """
    c = inputs.shape[1]
    t = torch.arange(kernel_size, device=inputs.device, dtype=torch.float32) - kernel_size // 2
    g = torch.exp(-(t**2) / (2 * sigma**2))
    g = (g / g.sum()).to(inputs.dtype)
    pad = kernel_size // 2
    x = F.pad(inputs, (pad, pad, pad, pad), mode="reflect")
    x = F.conv2d(x, g.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, g.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def _pixel_counts(h: int, w: int, steps: int, device: torch.device) -> torch.Tensor:
    """Pixels perturbed after step k = min(k * ceil(HW / steps), HW), k = 0 .. steps."""
    if steps < 1:
        raise ValueError("steps must be >= 1")
    per_step = math.ceil(h * w / steps)
    return (torch.arange(steps + 1, device=device) * per_step).clamp_max(h * w)


def _take(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``t[idx]``, or ``t`` itself when it is a single broadcast image (1, C, H|1, W|1)."""
    return t if t.shape[0] == 1 else t[idx]


def _perturbation_curves(
    model: nn.Module,
    start: torch.Tensor,
    end: torch.Tensor,
    rank: torch.Tensor,
    targets: torch.Tensor,
    *,
    steps: int,
    batch_size: int,
    known_first: torch.Tensor | None = None,
    known_last: torch.Tensor | None = None,
) -> torch.Tensor:
    """p_c along ``x_k = where(rank < n_k, end, start)``, k = 0 .. steps, as (N, steps + 1).

    The N * (steps + 1) perturbed images are built on the fly, ``batch_size`` at a time, from a
    rank-threshold mask (no per-pixel loop). ``known_first``/``known_last`` (N,) fill the
    k = 0 / k = steps columns without running those images (they are the unperturbed image for
    deletion / insertion, whose probability the caller already has).
    """
    n, h, w = rank.shape
    device = rank.device
    counts = _pixel_counts(h, w, steps, device)
    k_lo = 1 if known_first is not None else 0
    k_hi = steps - 1 if known_last is not None else steps
    per_image = k_hi - k_lo + 1
    curves = torch.empty(n, steps + 1, dtype=torch.float32, device=device)
    if per_image > 0:

        def make(j: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            i = torch.div(j, per_image, rounding_mode="floor")
            k = j - i * per_image + k_lo
            mask = (rank[i] < counts[k][:, None, None])[:, None]
            return torch.where(mask, _take(end, i), _take(start, i)), targets[i]

        probs = _chunked_probs(model, n * per_image, make, batch_size, device)
        curves[:, k_lo : k_hi + 1] = probs.view(n, per_image)
    if known_first is not None:
        curves[:, 0] = known_first.to(device=device, dtype=torch.float32)
    if known_last is not None:
        curves[:, steps] = known_last.to(device=device, dtype=torch.float32)
    return curves


def deletion_curve(
    model: nn.Module,
    inputs: torch.Tensor,
    maps: torch.Tensor,
    targets: torch.Tensor,
    *,
    steps: int = DEFAULT_STEPS,
    batch_size: int = 64,
    base_prob: torch.Tensor | None = None,
    baseline: str = "mean",
) -> torch.Tensor:
    """RISE deletion curve (Petsiuk et al., BMVC 2018), (N, steps + 1) float32.

    Point k is ``p_c`` of the image with its ``min(k * ceil(HW / steps), HW)`` most salient
    pixels (`saliency_rank`) replaced by the ``baseline``: ``"mean"`` sets them to 0 in
    normalised space on all channels, i.e. to the dataset mean colour (the default, as the
    run's ``deletion_auc``); ``"blur"`` takes them from `gaussian_blur` of the image (the
    insertion start image; another setting of the same metric, for ranking robustness).
    Point 0 is the untouched image (``base_prob`` if given), point ``steps`` the all-baseline
    image. Lower area under the curve = more faithful map.
    """
    maps, targets = _check(inputs, maps, targets)
    if baseline == "blur":
        baseline_image = gaussian_blur(inputs)
    elif baseline == "mean":
        baseline_image = torch.zeros_like(inputs[:1, :, :1, :1])
    else:
        raise ValueError(f"baseline must be 'mean' or 'blur', got {baseline!r}")
    return _perturbation_curves(
        model,
        inputs,
        baseline_image,
        saliency_rank(maps),
        targets,
        steps=steps,
        batch_size=batch_size,
        known_first=base_prob,
    )


def insertion_curve(
    model: nn.Module,
    inputs: torch.Tensor,
    maps: torch.Tensor,
    targets: torch.Tensor,
    *,
    steps: int = DEFAULT_STEPS,
    batch_size: int = 64,
    base_prob: torch.Tensor | None = None,
) -> torch.Tensor:
    """RISE insertion curve (Petsiuk et al., BMVC 2018), (N, steps + 1) float32.

    Starts from `gaussian_blur` (11x11, sigma 5, in normalised space) of the image and puts the
    original pixels back, most salient first, ``ceil(HW / steps)`` per step. Point 0 is the
    fully blurred image, point ``steps`` the original (``base_prob`` if given). Higher area under
    the curve = more faithful map.
    """
    maps, targets = _check(inputs, maps, targets)
    return _perturbation_curves(
        model,
        gaussian_blur(inputs),
        inputs,
        saliency_rank(maps),
        targets,
        steps=steps,
        batch_size=batch_size,
        known_last=base_prob,
    )


def auc(curves: torch.Tensor) -> torch.Tensor:
    """Area under (N, S + 1) curves by the trapezoid rule with x = k / S in [0, 1], (N,).

    ``AUC = sum_k (y_k + y_{k+1}) / (2 S)``, as RISE's ``auc`` (``(sum - y_0/2 - y_S/2) / S``).
    """
    s = curves.shape[-1] - 1
    if s < 1:
        raise ValueError("a curve needs at least 2 points")
    return (curves[..., :-1] + curves[..., 1:]).sum(dim=-1) / (2 * s)


@dataclass
class Faithfulness:
    """Per-image faithfulness of N maps; all tensors on the inputs' device.

    base_prob (N,): ``Y = p_c(x)``. explanation_prob (N,): ``O = p_c(x * M)``.
    average_drop (N,): ``max(0, Y - O) / Y`` (x 100 and averaged = Average Drop %).
    increase (N,) bool: ``O > Y`` (x 100 and averaged = Increase in Confidence %).
    deletion_curve / insertion_curve (N, S + 1); deletion_auc / insertion_auc (N,).
    """

    base_prob: torch.Tensor
    explanation_prob: torch.Tensor
    average_drop: torch.Tensor
    increase: torch.Tensor
    deletion_curve: torch.Tensor
    insertion_curve: torch.Tensor
    deletion_auc: torch.Tensor
    insertion_auc: torch.Tensor

    @property
    def steps(self) -> int:
        """Number of perturbation steps S (curves have S + 1 points)."""
        return self.deletion_curve.shape[1] - 1


def faithfulness(
    model: nn.Module,
    inputs: torch.Tensor,
    maps: torch.Tensor,
    targets: torch.Tensor,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    steps: int = DEFAULT_STEPS,
    batch_size: int = 64,
    base_prob: torch.Tensor | None = None,
) -> Faithfulness:
    """Average Drop, Increase in Confidence, Deletion and Insertion for N maps at once.

    ``p_c(x)`` is computed once (or taken from ``base_prob``, e.g. shared by several methods on
    the same images) and reused as deletion point 0 and insertion point ``steps``. Forward passes:
    N (unless given) + N + 2 N (steps - 1) + N (blurred start) + N (all-mean end).
    """
    maps, targets = _check(inputs, maps, targets)
    if base_prob is None:
        base_prob = target_probabilities(model, inputs, targets, batch_size=batch_size)
    di = average_drop_increase(
        model, inputs, maps, targets, mean=mean, std=std, batch_size=batch_size, base_prob=base_prob
    )
    kw = {"steps": steps, "batch_size": batch_size, "base_prob": di.base_prob}
    deletion = deletion_curve(model, inputs, maps, targets, **kw)
    insertion = insertion_curve(model, inputs, maps, targets, **kw)
    return Faithfulness(
        base_prob=di.base_prob,
        explanation_prob=di.explanation_prob,
        average_drop=di.average_drop,
        increase=di.increase,
        deletion_curve=deletion,
        insertion_curve=insertion,
        deletion_auc=auc(deletion),
        insertion_auc=auc(insertion),
    )


@dataclass
class StepSensitivity:
    """How far deletion/insertion AUCs at ``steps`` move against a fine reference resolution.

    ``*_abs_diff`` (N,) = ``|AUC(steps) - AUC(fine_steps)|`` per image; AUCs are in [0, 1].
    """

    steps: int
    fine_steps: int
    deletion_auc: torch.Tensor
    deletion_auc_fine: torch.Tensor
    insertion_auc: torch.Tensor
    insertion_auc_fine: torch.Tensor

    @property
    def deletion_abs_diff(self) -> torch.Tensor:
        """(N,) ``|AUC(steps) - AUC(fine_steps)|`` of the deletion curve, per image."""
        return (self.deletion_auc - self.deletion_auc_fine).abs()

    @property
    def insertion_abs_diff(self) -> torch.Tensor:
        """(N,) ``|AUC(steps) - AUC(fine_steps)|`` of the insertion curve, per image."""
        return (self.insertion_auc - self.insertion_auc_fine).abs()


def step_sensitivity(
    model: nn.Module,
    inputs: torch.Tensor,
    maps: torch.Tensor,
    targets: torch.Tensor,
    *,
    steps: int = DEFAULT_STEPS,
    fine_pixels_per_step: int = 224,
    batch_size: int = 64,
) -> StepSensitivity:
    """Deletion/insertion AUCs at ``steps`` and at RISE's resolution of 224 pixels per step.

    ``fine_steps = ceil(H * W / fine_pixels_per_step)`` (224 steps at 224x224). Use it to justify
    `DEFAULT_STEPS`: report ``deletion_abs_diff`` / ``insertion_abs_diff``.
    """
    maps, targets = _check(inputs, maps, targets)
    h, w = maps.shape[-2:]
    fine = math.ceil(h * w / fine_pixels_per_step)
    base = target_probabilities(model, inputs, targets, batch_size=batch_size)
    out = {}
    for name, fn in (("deletion", deletion_curve), ("insertion", insertion_curve)):
        for suffix, s in (("", steps), ("_fine", fine)):
            curve = fn(model, inputs, maps, targets, steps=s, batch_size=batch_size, base_prob=base)
            out[f"{name}_auc{suffix}"] = auc(curve)
    return StepSensitivity(steps=steps, fine_steps=fine, **out)
