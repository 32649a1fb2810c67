"""Localisation of a map against a ground-truth region (boxes or a mask): no forward pass.

Every function takes ``maps`` (N, H, W) and ``regions`` (N, H, W) bool, True inside the
ground truth (`camscope.io.boxes.box_masks` turns boxes into such masks), and returns (N,)
float32; an image whose region is empty gets NaN (no ground truth: left out of any mean).

- **Pointing game** (Zhang et al., "Top-down Neural Attention by Excitation Backprop", ECCV
  2016, https://arxiv.org/abs/1608.00507): a hit (1.0) when the map's maximum lies within
  ``tolerance`` pixels (15 in the paper; Euclidean distance) of the region, else 0.0. When
  several pixels share the maximum, a hit when any of them does; a map without spatial variation
  has no maximum to point with: NaN.
- **Energy-based pointing game** (Wang et al., "Score-CAM", CVPR-W 2020,
  https://arxiv.org/abs/1910.01279): the share of the min-max normalised map's energy inside the
  region, ``sum_{in} M' / sum M'``.
- **Relevance mass accuracy** (Arras, Osman, Samek, "CLEVR-XAI", Information Fusion 2022,
  https://arxiv.org/abs/2003.07258): ``R_in / R_total`` over the map's positive values (as the
  paper; for non-negative CAMs it is the energy game without the min-max step).
- **Relevance rank accuracy** (ibid.): with K the region's size, the share of the K
  highest-ranked pixels (`saliency_rank`: ties by pixel index) that fall inside the region.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from camscope.metrics.faithfulness import _accumulate_dtype, saliency_rank

__all__ = [
    "POINTING_TOLERANCE",
    "energy_pointing_game",
    "pointing_game",
    "relevance_mass",
    "relevance_rank",
]

#: Zhang et al.'s tolerance, in pixels of the map (224x224 inputs).
POINTING_TOLERANCE = 15


def _check(maps: torch.Tensor, regions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if maps.ndim != 3 or tuple(regions.shape) != tuple(maps.shape):
        raise ValueError(
            f"maps and regions must both be (N, H, W), got {tuple(maps.shape)} and "
            f"{tuple(regions.shape)}"
        )
    dtype = _accumulate_dtype(maps.device)
    return maps.detach().to(dtype), regions.to(device=maps.device, dtype=torch.bool)


def _nan_where_empty(values: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    empty = ~regions.flatten(1).any(dim=1)
    return torch.where(empty, torch.nan, values).float()


def _dilate(regions: torch.Tensor, radius: float) -> torch.Tensor:
    """Pixels within Euclidean ``radius`` of a region pixel, (N, H, W) bool.

    The digital disk is the union of its rows: offset ``dy`` spans ``|dx| <= sqrt(r^2 - dy^2)``.
    Each row half-width's horizontal window is a difference of one prefix sum along the row,
    shifted by ``dy``: O(radius) cheap passes per image instead of a (2r+1)^2 convolution.
    """
    r = math.floor(radius)
    if r < 1:
        return regions
    h, w = regions.shape[1:]
    padded = F.pad(regions.to(torch.int32), (r + 1, r))  # column j + r + 1 holds column j
    prefix = padded.cumsum(dim=-1)  # prefix[..., k]: region pixels in padded columns <= k
    rows: dict[int, torch.Tensor] = {}  # half-width -> any region pixel within it on the row
    out = torch.zeros_like(regions)
    for dy in range(-min(r, h - 1), min(r, h - 1) + 1):
        half = math.isqrt(math.floor(radius**2) - dy * dy)
        if half not in rows:  # columns x - half .. x + half, from two prefix sums
            upper = prefix[..., r + 1 + half : r + 1 + half + w]
            rows[half] = (upper - prefix[..., r - half : r - half + w]) > 0
        near = rows[half]  # (N, H, W): region pixel at (y, x + dx), |dx| <= half
        if dy >= 0:  # out[y] |= near[y + dy]
            out[:, : h - dy] |= near[:, dy:]
        else:
            out[:, -dy:] |= near[:, : h + dy]
    return out


def pointing_game(
    maps: torch.Tensor, regions: torch.Tensor, *, tolerance: float = POINTING_TOLERANCE
) -> torch.Tensor:
    """1.0 when the map's maximum is within ``tolerance`` px of the region, else 0.0; (N,)."""
    maps, regions = _check(maps, regions)
    flat = maps.flatten(1)
    top = flat.amax(dim=1, keepdim=True)
    maxima = (flat == top).view_as(maps)
    hit = (maxima & _dilate(regions, tolerance)).flatten(1).any(dim=1).to(maps.dtype)
    flat_map = top[:, 0] == flat.amin(dim=1)
    return _nan_where_empty(torch.where(flat_map, torch.nan, hit), regions)


def energy_pointing_game(maps: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """Share of the min-max normalised map's energy inside the region (Score-CAM), (N,)."""
    maps, regions = _check(maps, regions)
    flat = maps.flatten(1)
    lo, hi = flat.amin(dim=1, keepdim=True), flat.amax(dim=1, keepdim=True)
    norm = (flat - lo) / (hi - lo)  # NaN for a constant map: no energy to place
    inside = (norm * regions.flatten(1)).sum(dim=1)
    return _nan_where_empty(inside / norm.sum(dim=1), regions)


def relevance_mass(maps: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """Share of the positive relevance inside the region (Arras et al. 2022), (N,)."""
    maps, regions = _check(maps, regions)
    pos = maps.clamp_min(0).flatten(1)
    total = pos.sum(dim=1)
    inside = (pos * regions.flatten(1)).sum(dim=1)
    return _nan_where_empty(torch.where(total > 0, inside / total, torch.nan), regions)


def relevance_rank(maps: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """Share of the K top-ranked pixels inside the K-pixel region (Arras et al. 2022), (N,)."""
    maps, regions = _check(maps, regions)
    flat_regions = regions.flatten(1)
    k = flat_regions.sum(dim=1, keepdim=True)
    top = saliency_rank(maps).flatten(1) < k
    hits = (top & flat_regions).sum(dim=1).to(maps.dtype)
    return _nan_where_empty(hits / k[:, 0].clamp_min(1), regions)
