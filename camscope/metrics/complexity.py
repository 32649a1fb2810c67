"""Complexity of a map: sparseness (Gini index) and entropy, free per map (no forward pass).

Both read the map's absolute values ``a = |M|`` over its H x W pixels (n of them):

- **Sparseness** (Chalasani et al., ICML 2020, "Concise Explanations of Neural Networks using
  Adversarial Training", https://arxiv.org/abs/1810.06583): the Gini index of ``a`` sorted
  ascending, ``G = sum_k (2k - n - 1) a_(k) / (n sum_k a_(k))``, k = 1..n. 0 = every pixel
  equal, ``1 - 1/n`` = one pixel holds everything; higher = sparser = simpler to read.
- **Entropy** (Bhatt, Weller, Moura, IJCAI 2020, "Evaluating and Aggregating Feature-based
  Model Explanations", https://arxiv.org/abs/2005.00631; Quantus's ``Complexity``): the Shannon
  entropy (natural log) of the fractional contributions ``p = a / sum a``,
  ``H = -sum p ln p`` (0 ln 0 = 0). 0 = one pixel, ``ln n`` = uniform; lower = simpler.

A map with no mass (all zeros) has no distribution: both are NaN there.
"""

from __future__ import annotations

import torch

from camscope.metrics.faithfulness import _accumulate_dtype

__all__ = ["entropy", "sparseness"]


def _abs_flat(maps: torch.Tensor) -> torch.Tensor:
    if maps.ndim < 2:
        raise ValueError(f"maps must be (N, ...), got {tuple(maps.shape)}")
    return maps.detach().flatten(1).abs().to(_accumulate_dtype(maps.device))


def sparseness(maps: torch.Tensor) -> torch.Tensor:
    """Gini index of each map's absolute values (Chalasani et al. 2020), (N,) float32."""
    a = torch.sort(_abs_flat(maps), dim=1).values
    n = a.shape[1]
    k = torch.arange(1, n + 1, device=a.device, dtype=a.dtype)
    total = a.sum(dim=1)
    gini = ((2 * k - n - 1) * a).sum(dim=1) / (n * total)
    return torch.where(total > 0, gini, torch.nan).float()


def entropy(maps: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (nats) of each map's normalised absolute values (Bhatt et al. 2020)."""
    a = _abs_flat(maps)
    total = a.sum(dim=1, keepdim=True)
    p = a / total.clamp_min(torch.finfo(a.dtype).tiny)
    h = -(torch.where(p > 0, p * torch.log(p.clamp_min(torch.finfo(a.dtype).tiny)), 0)).sum(1)
    return torch.where(total[:, 0] > 0, h, torch.nan).float()
