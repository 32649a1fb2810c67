"""Agreement between two maps of the same images: Pearson, Spearman, top-k IoU."""

from __future__ import annotations

import torch

from camscope.metrics.faithfulness import _accumulate_dtype, saliency_rank


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
