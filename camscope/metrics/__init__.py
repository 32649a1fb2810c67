"""Faithfulness, agreement and sanity metrics for class activation maps.

Pure functions over a model: nothing here knows how a map was made (this module must not import
`camscope.methods` or the pipeline). Conventions shared by every function:

- ``model``: an ``nn.Module`` returning logits (N, K); it is only run, never changed (the sanity
  check works on a deep copy).
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
- Cascading model-parameter randomisation: Adebayo et al., "Sanity Checks for Saliency Maps",
  NeurIPS 2018, https://arxiv.org/abs/1810.03292
"""

from __future__ import annotations

import copy
import csv
import functools
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "BLUR_KERNEL_SIZE",
    "BLUR_SIGMA",
    "DEFAULT_STEPS",
    "DropIncrease",
    "Faithfulness",
    "PairedDifference",
    "SanityStep",
    "StepSensitivity",
    "accuracy",
    "auc",
    "average_drop_increase",
    "average_ranks",
    "deletion_curve",
    "explanation_inputs",
    "faithfulness",
    "gaussian_blur",
    "insertion_curve",
    "load_labels",
    "lookup_label",
    "mean_ci",
    "paired_difference",
    "passes_sanity",
    "pearson",
    "randomization_blocks",
    "saliency_rank",
    "sanity_check",
    "spearman",
    "step_sensitivity",
    "target_probabilities",
    "top_iou",
    "truth_from_filename",
]

#: Deletion/insertion curve resolution: ``steps`` perturbation steps, ``steps + 1`` curve points,
#: ``ceil(H * W / steps)`` pixels per step (1568 at 224x224, where 32 divides the pixel count so
#: every step removes the same number of pixels). `step_sensitivity` and
#: ``benchmarks/step_sensitivity.py`` measure how far the AUCs move against RISE's 224 pixels per
#: step (224 steps at 224x224). EfficientNet-Lite0 (bundled weights, layer bn2), maps of all three
#: methods: 32 steps change the per-image AUC by 0.0009-0.0028 on average (max 0.0086) on 10
#: sample images (2-core CPU), and every mean paired difference between two methods by at most
#: 0.0025 (the Grad-CAM/ScoreCAM gaps there are 0.025-0.047); on 100 images (H200) 50 steps moved
#: it by 0.0012-0.0019 and 20 steps by 0.0031-0.0045. 32 steps cost 65 forward passes per image
#: and method against 101 for 50 and 449 for 224.
DEFAULT_STEPS = 32
#: RISE's insertion blur: an 11x11 Gaussian with sigma 5 (applied in normalised space).
BLUR_KERNEL_SIZE = 11
BLUR_SIGMA = 5.0

ExplainFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


# --------------------------------------------------------------------------------------------
# helpers


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
) -> torch.Tensor:
    """RISE deletion curve (Petsiuk et al., BMVC 2018), (N, steps + 1) float32.

    Point k is ``p_c`` of the image with its ``min(k * ceil(HW / steps), HW)`` most salient
    pixels (`saliency_rank`) set to 0 in normalised space on all channels, i.e. to the dataset
    mean colour. Point 0 is the untouched image (``base_prob`` if given), point ``steps`` the
    all-mean image. Lower area under the curve = more faithful map.
    """
    maps, targets = _check(inputs, maps, targets)
    baseline = torch.zeros(1, inputs.shape[1], 1, 1, dtype=inputs.dtype, device=inputs.device)
    return _perturbation_curves(
        model,
        inputs,
        baseline,
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
        return (self.deletion_auc - self.deletion_auc_fine).abs()

    @property
    def insertion_abs_diff(self) -> torch.Tensor:
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


# --------------------------------------------------------------------------------------------
# agreement between maps


def pearson(maps_a: torch.Tensor, maps_b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of two maps per image over all pixels, (N,) float32.

    ``r = sum((a - mean a)(b - mean b)) / sqrt(sum((a - mean a)^2) sum((b - mean b)^2))``,
    accumulated in float64. Convention: when either map is constant (zero variance, e.g. an
    empty all-zero map) the correlation is undefined; we return 0.0 (no measurable linear
    association), never NaN.
    """
    if maps_a.shape != maps_b.shape:
        raise ValueError(f"shape mismatch {tuple(maps_a.shape)} vs {tuple(maps_b.shape)}")
    dt = _accumulate_dtype(maps_a.device)
    a = maps_a.reshape(len(maps_a), -1).to(dt)
    b = maps_b.reshape(len(maps_b), -1).to(dt)
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    denom = ((a * a).sum(dim=1) * (b * b).sum(dim=1)).sqrt()
    r = (a * b).sum(dim=1) / torch.where(denom > 0, denom, torch.ones_like(denom))
    return torch.where(denom > 0, r, torch.zeros_like(r)).clamp(-1, 1).float()


def top_iou(maps_a: torch.Tensor, maps_b: torch.Tensor, fraction: float = 0.2) -> torch.Tensor:
    """IoU of the top-``fraction`` pixels of two maps, (N,) float32.

    Each map contributes exactly ``k = round(fraction * H * W)`` pixels (clamped to [1, HW]),
    chosen by `saliency_rank` (ties broken by pixel index), so ``IoU = |A & B| / (2k - |A & B|)``.
    """
    if maps_a.shape != maps_b.shape:
        raise ValueError(f"shape mismatch {tuple(maps_a.shape)} vs {tuple(maps_b.shape)}")
    hw = maps_a.shape[-2] * maps_a.shape[-1]
    k = min(max(round(fraction * hw), 1), hw)
    top_a = (saliency_rank(maps_a) < k).flatten(1)
    top_b = (saliency_rank(maps_b) < k).flatten(1)
    inter = (top_a & top_b).sum(dim=1).float()
    return inter / (2 * k - inter)


def average_ranks(values: torch.Tensor) -> torch.Tensor:
    """Row-wise ranks 1..M of (N, M) values, tied values sharing their average rank.

    Same as ``scipy.stats.rankdata(method="average")`` per row, vectorised: sort, find the
    first and last sorted position of each run of equal values, give each element
    ``(first + last) / 2 + 1`` and scatter back.
    """
    n, m = values.shape
    sorted_vals, order = torch.sort(values, dim=1, stable=True)
    pos = torch.arange(m, device=values.device).expand(n, -1)
    new_run = torch.ones_like(sorted_vals, dtype=torch.bool)
    new_run[:, 1:] = sorted_vals[:, 1:] != sorted_vals[:, :-1]
    run_end = torch.ones_like(new_run)
    run_end[:, :-1] = new_run[:, 1:]
    first = torch.where(new_run, pos, torch.zeros_like(pos)).cummax(dim=1).values
    last_rev = torch.where(run_end, pos, torch.full_like(pos, m - 1)).flip(1).cummin(dim=1)
    last = last_rev.values.flip(1)
    dt = _accumulate_dtype(values.device)
    avg = (first + last).to(dt) / 2 + 1
    return torch.empty_like(avg).scatter_(1, order, avg)


def spearman(maps_a: torch.Tensor, maps_b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation per image, (N,): `pearson` of `average_ranks` of the pixels.

    Equals ``scipy.stats.spearmanr`` except for a constant map, where we return 0.0 (see
    `pearson`) instead of NaN.
    """
    a = average_ranks(maps_a.reshape(len(maps_a), -1))
    b = average_ranks(maps_b.reshape(len(maps_b), -1))
    return pearson(a, b)


# --------------------------------------------------------------------------------------------
# sanity check: cascading model-parameter randomisation (Adebayo et al., NeurIPS 2018)

_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def _has_params(module: nn.Module) -> bool:
    return next(module.parameters(), None) is not None


def _is_norm(module: nn.Module) -> bool:
    """A normalisation layer: torch's norms (and subclasses such as timm's BatchNormAct2d) or
    a leaf whose class name ends like one (``LayerNorm2d``, ``RmsNorm``, ``FrozenBatchNorm2d``)."""
    norms = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)
    if isinstance(module, norms):
        return True
    leaf = not any(_has_params(c) for c in module.children())
    return leaf and re.search(r"Norm(Act)?(\d+d)?$", type(module).__name__) is not None


def randomization_blocks(model: nn.Module, example_input: torch.Tensor | None = None) -> list[str]:
    """The model's parameterised blocks, output side first: the default sanity-check cascade.

    Rule (generic, no per-architecture table):

    1. Skip wrappers: while the root has exactly one child with parameters and no parameters of
       its own, descend into it.
    2. Take the root's children that have parameters and run during a forward pass of
       ``example_input`` (default zeros (1, 3, 224, 224)); their forward order is the order of
       the first call of any module inside them (forward pre-hooks), so ModuleLists count too.
    3. The last of them is the classifier head and stays one block. The last *container*
       (Sequential/ModuleList/ModuleDict) before it - the one whose output feeds the head -
       is expanded into its parameterised children; earlier containers stay whole.
    4. A normalisation layer (other than the head) is merged into the block before it
       ("conv1+bn1").
    5. Reverse, so the output side comes first.

    torchvision ResNet-50 -> ``fc, layer4.2, layer4.1, layer4.0, layer3, layer2, layer1,
    conv1+bn1``; timm EfficientNet -> ``classifier, conv_head+bn2, blocks.6, ..., blocks.0,
    conv_stem+bn1``. Names are dotted paths from ``model``; a block of several modules joins
    them with ``+``. Parameters held by the root itself (e.g. a ViT's ``pos_embed``) belong to
    no block and are never randomised.
    """
    prefix, root = "", model
    while True:
        kids = [(n, m) for n, m in root.named_children() if _has_params(m)]
        if len(kids) != 1 or next(root.parameters(recurse=False), None) is not None:
            break
        if not any(True for _ in kids[0][1].children()):
            break
        prefix, root = f"{prefix}{kids[0][0]}.", kids[0][1]

    first_call: dict[nn.Module, int] = {}

    def hook(module: nn.Module, _args: object) -> None:
        first_call.setdefault(module, len(first_call))

    handles = [module.register_forward_pre_hook(hook) for module in root.modules()]
    try:
        param = next(model.parameters())
        if example_input is None:
            example_input = torch.zeros(1, 3, 224, 224)
        with torch.no_grad():
            model(example_input.to(device=param.device, dtype=param.dtype))
    finally:
        for handle in handles:
            handle.remove()

    def order(module: nn.Module) -> int | None:
        calls = [first_call[m] for m in module.modules() if m in first_call]
        return min(calls) if calls else None

    def ordered(parent: nn.Module, base: str) -> list[tuple[str, nn.Module]]:
        found = [
            (order(m), f"{base}{n}", m)
            for n, m in parent.named_children()
            if _has_params(m) and order(m) is not None
        ]
        return [(name, m) for _, name, m in sorted(found, key=lambda t: t[0])]

    top = ordered(root, prefix)
    if not top:
        raise ValueError("the model has no parameterised submodule that runs in forward")
    containers = [i for i, (_, m) in enumerate(top[:-1]) if isinstance(m, _CONTAINERS)]
    if containers:
        i = containers[-1]
        name, module = top[i]
        top[i : i + 1] = ordered(module, f"{name}.")

    groups: list[list[str]] = []
    for k, (name, module) in enumerate(top):
        if groups and k < len(top) - 1 and _is_norm(module):
            groups[-1].append(name)
        else:
            groups.append([name])
    return ["+".join(g) for g in reversed(groups)]


@dataclass
class SanityStep:
    """One step of the cascade: ``block`` and everything above it are randomised.

    spearman (N,): signed Spearman rank correlation between the trained model's map and the
    randomised model's map, per image. mean/min/max: over images, signed; mean_abs/max_abs: of
    ``|spearman|``. n_reset / n_params: parameter tensors of this block re-initialised by a
    ``reset_parameters()`` / all parameter tensors of the block (the rest keep trained values).
    """

    block: str
    spearman: torch.Tensor
    mean: float
    min: float
    max: float
    mean_abs: float
    max_abs: float
    n_reset: int
    n_params: int

    @classmethod
    def from_values(cls, block: str, values: torch.Tensor, n_reset: int, n_params: int):
        v = values.detach().float()
        a = v.abs()
        return cls(
            block=block,
            spearman=v,
            mean=float(v.mean()),
            min=float(v.min()),
            max=float(v.max()),
            mean_abs=float(a.mean()),
            max_abs=float(a.max()),
            n_reset=n_reset,
            n_params=n_params,
        )


def _reinitialise(model: nn.Module, block: str) -> tuple[int, int]:
    """``reset_parameters()`` every module of ``block`` ('+'-joined dotted names).

    Conv/Linear get PyTorch's default random init; BatchNorm gets weight 1, bias 0 and fresh
    running statistics (mean 0, var 1, counter 0) - its ``reset_parameters`` resets those too.
    Returns (parameter tensors reset, parameter tensors in the block).
    """
    reset: set[int] = set()
    total: set[int] = set()
    for name in block.split("+"):
        for module in model.get_submodule(name).modules():
            total.update(id(p) for p in module.parameters(recurse=False))
            fn = getattr(module, "reset_parameters", None)
            if callable(fn):
                fn()
                reset.update(id(p) for p in module.parameters(recurse=False))
            elif isinstance(module, nn.modules.batchnorm._NormBase):
                module.reset_running_stats()
    return len(reset), len(total)


def sanity_check(
    model: nn.Module,
    explain_fn: ExplainFn,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    blocks: Sequence[str] | None = None,
    seed: int = 0,
) -> list[SanityStep]:
    """Cascading model-parameter randomisation test (Adebayo et al., NeurIPS 2018).

    Deep-copies ``model`` (the original is never modified), computes the reference maps
    ``explain_fn(copy, inputs, targets)`` with the trained weights, then re-initialises
    ``blocks`` (default `randomization_blocks`, output side first) one after the other,
    cumulatively, and after each step computes the per-image `spearman` correlation between the
    reference map and ``explain_fn(copy, inputs, targets)``. The targets stay fixed. The RNG is
    seeded with ``torch.manual_seed(seed)`` before the cascade inside ``torch.random.fork_rng``
    (the caller's RNG state is restored). A map that reflects the learned weights should
    decorrelate; see `passes_sanity`.
    """
    work = copy.deepcopy(model)
    targets = targets.to(inputs.device)
    if blocks is None:
        blocks = randomization_blocks(work, inputs[:1])
    reference = explain_fn(work, inputs, targets).detach()
    devices = sorted({p.device.index or 0 for p in work.parameters() if p.device.type == "cuda"})
    steps = []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for block in blocks:
            n_reset, n_params = _reinitialise(work, block)
            maps = explain_fn(work, inputs, targets).detach()
            steps.append(
                SanityStep.from_values(block, spearman(reference, maps), n_reset, n_params)
            )
    return steps


def passes_sanity(steps: Sequence[SanityStep], threshold: float = 0.5) -> bool:
    """True when the method passes the cascading randomisation check.

    Rule: after the final step (all listed blocks randomised) the mean over images of
    ``|Spearman|`` between the trained-model map and the randomised-model map is below
    ``threshold`` (default 0.5). A map that stays rank-correlated with itself when every weight
    is random does not depend on what the model learned (Adebayo et al. flag exactly that).
    """
    if not steps:
        raise ValueError("no sanity steps")
    final = steps[-1].mean_abs
    return bool(math.isfinite(final) and final < threshold)


# --------------------------------------------------------------------------------------------
# statistics


def _as_array(values: object) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().double().numpy()
    return np.asarray(values, dtype=np.float64).ravel()


def mean_ci(values: object, confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean and two-sided Student-t confidence interval ``mean +- t_{(1+c)/2, n-1} s / sqrt(n)``.

    ``values``: tensor, array or sequence; NaNs are dropped (n counts the rest). n = 0 ->
    (nan, nan, nan); n = 1 -> (mean, nan, nan); zero spread -> (mean, mean, mean). Matches
    ``scipy.stats.t.interval(c, n - 1, loc=mean, scale=sem)``.
    """
    from scipy import stats

    arr = _as_array(values)
    arr = arr[~np.isnan(arr)]
    n = arr.size
    if n == 0:
        return (math.nan, math.nan, math.nan)
    mean = float(arr.mean())
    if n < 2:
        return (mean, math.nan, math.nan)
    sem = float(arr.std(ddof=1) / math.sqrt(n))
    if sem == 0:
        return (mean, mean, mean)
    half = float(stats.t.ppf((1 + confidence) / 2, n - 1)) * sem
    return (mean, mean - half, mean + half)


class PairedDifference(NamedTuple):
    """Mean of ``a - b`` over paired samples with its t confidence interval.

    significant: the interval excludes 0 (a two-sided paired t-test at 1 - confidence).
    """

    mean: float
    low: float
    high: float
    significant: bool
    n: int


def paired_difference(a: object, b: object, confidence: float = 0.95) -> PairedDifference:
    """Paired difference ``d_i = a_i - b_i`` -> `mean_ci` of d and whether it excludes 0.

    Pairs where either value is NaN are dropped. With n < 2 the interval is NaN and the
    difference is never called significant.
    """
    x, y = _as_array(a), _as_array(b)
    if x.shape != y.shape:
        raise ValueError(f"paired samples differ in length: {x.size} vs {y.size}")
    d = x - y
    d = d[~np.isnan(d)]
    mean, low, high = mean_ci(d, confidence)
    significant = bool(math.isfinite(low) and (low > 0 or high < 0))
    return PairedDifference(mean, low, high, significant, int(d.size))


# --------------------------------------------------------------------------------------------
# accuracy and ground truth

_WNID = re.compile(r"(?<![0-9A-Za-z])n\d{8}(?!\d)")


def accuracy(pred: object, truth: object) -> float:
    """Share of predictions equal to the truth, over the images whose truth is known.

    ``truth`` entries that are None or negative are unknown and skipped; returns NaN when no
    truth is known.
    """
    if isinstance(pred, torch.Tensor):
        pred = pred.tolist()
    if isinstance(truth, torch.Tensor):
        truth = truth.tolist()
    pairs = [(p, t) for p, t in zip(pred, truth, strict=True) if t is not None and t >= 0]
    if not pairs:
        return math.nan
    return sum(int(p) == int(t) for p, t in pairs) / len(pairs)


@functools.lru_cache(maxsize=1)
def _imagenet_tables() -> tuple[dict[str, int], dict[str, int | None]]:
    """(wnid -> index, lower-case class name -> index or None when ambiguous), offline."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    wnids = {w: i for i, w in enumerate(info.label_names())}
    names: dict[str, int | None] = {}
    for i in range(info.num_classes()):
        description = info.index_to_description(i).lower()
        for name in {description, *(s.strip() for s in description.split(","))}:
            names[name] = None if names.get(name, i) != i else i
    return wnids, names


def truth_from_filename(name: str) -> int | None:
    """ImageNet-1k class index of the first wnid (``n`` + 8 digits) in a file name, or None.

    E.g. ``"n01440764_tench.JPEG"`` -> 0, ``"ILSVRC2012_val_00000001_n01751748.png"`` -> 65.
    Uses ``timm.data.ImageNetInfo`` (bundled, offline). A wnid outside ImageNet-1k -> None.
    """
    wnids, _ = _imagenet_tables()
    for match in _WNID.finditer(Path(str(name)).name):
        if match.group(0) in wnids:
            return wnids[match.group(0)]
    return None


def _class_index(value: str) -> int:
    wnids, names = _imagenet_tables()
    text = value.strip()
    if re.fullmatch(r"\d+", text):
        return int(text)
    if text in wnids:
        return wnids[text]
    key = text.lower()
    if key in names:
        index = names[key]
        if index is None:
            raise ValueError(
                f"class name '{text}' is ambiguous in ImageNet; give the index or wnid"
            )
        return index
    raise ValueError(f"unknown class '{text}' (expected an index, a wnid or an ImageNet name)")


_KEY_COLUMNS = ("file", "name", "filename", "image")
_CLASS_COLUMNS = ("class_index", "class", "label", "index", "target", "wnid", "category")


def load_labels(path: str | Path) -> dict[str, int]:
    """Read ground-truth labels from a CSV: file name -> ImageNet class index.

    The key column is ``file`` (or ``name``, ``filename``, ``image``); the class column is the
    first present of ``class_index``, ``class``, ``label``, ``index``, ``target``, ``wnid``,
    ``category``, holding an index, a wnid or an (unambiguous) ImageNet class name. Headers are
    case-insensitive. ``shared/imagenet-samples/labels.csv`` (``file,class_index,wnid,category``)
    works as is. Raises ValueError naming the line on a bad row.
    """
    path = Path(path)
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = {h.strip().lower(): h for h in reader.fieldnames or []}
        key_col = next((header[c] for c in _KEY_COLUMNS if c in header), None)
        cls_col = next((header[c] for c in _CLASS_COLUMNS if c in header), None)
        if key_col is None or cls_col is None:
            raise ValueError(
                f"{path}: need a file/name column and a class column "
                f"({', '.join(_CLASS_COLUMNS)}); found {list(header.values())}"
            )
        labels: dict[str, int] = {}
        for line, row in enumerate(reader, start=2):
            key, value = (row.get(key_col) or "").strip(), (row.get(cls_col) or "").strip()
            if not key:
                continue
            try:
                labels[key] = _class_index(value)
            except ValueError as exc:
                raise ValueError(f"{path}:{line}: {exc}") from None
    return labels


def lookup_label(labels: Mapping[str, int], *keys: str) -> int | None:
    """The label of the first key found as given, as a base name, or as a stem; else None."""
    for key in keys:
        if not key:
            continue
        p = Path(key)
        for candidate in (key, p.name, p.stem):
            if candidate in labels:
                return labels[candidate]
    stems = {Path(k).stem: v for k, v in labels.items()}
    for key in keys:
        if key and Path(key).stem in stems:
            return stems[Path(key).stem]
    return None
