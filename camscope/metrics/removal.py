"""ROAD: RemOve And Debias (Rong et al., ICML 2022), batched.

A removal metric removes the pixels a map ranks most relevant first (MoRF) or least relevant
first (LeRF) and measures the model on what is left. Replacing removed pixels by a constant lets
the *shape* of the removed region leak the class (the paper's "class information leakage"); ROAD
instead fills them by **noisy linear imputation**: each removed pixel equals the weighted mean of
its 8 neighbours (weight 1/6 for the 4 direct, 1/12 for the 4 diagonal neighbours; neighbours
outside the image are left out), plus Gaussian noise of standard deviation ``noise`` (0.01, on
the values of the tensor given, as the authors' code). The removed pixels of one image form one
sparse linear system, symmetric and diagonally dominant (positive definite whenever at least one
pixel is kept), solved exactly for all channels at once; the systems of a whole batch of
(image, fraction) pairs are assembled without Python loops into one block-diagonal matrix whose
blocks are factorised (sparse LU, scipy.sparse) in a nested-dissection order, on as many
threads as torch uses. On a CUDA device the systems are solved there instead, with dense
batched linear algebra over the same dissection (`camscope.metrics.gridsolve`).

Conventions as `camscope.metrics.faithfulness` (``model`` returns logits and may be an
`camscope.engine.InferenceEngine`; ``inputs`` normalised (N, 3, H, W); ``maps`` (N, H, W);
``targets`` (N,) class indices; scores are softmax probabilities of the target class).

Fractions are the share of pixels removed, exactly: the ``round(f * H * W)`` pixels first in
`saliency_rank` order (MoRF) or last (LeRF), ties broken by pixel index. The paper evaluates
10 %, 20 %, ..., 90 % (`ROAD_FRACTIONS`). Per image:

- ``morf`` (N, F): ``p_c`` after removing the most relevant fraction; low = faithful map.
- ``lerf`` (N, F): ``p_c`` after removing the least relevant fraction; high = faithful map.
- ``morf_mean``, ``lerf_mean``: their mean over the fractions (area under the curve);
  ``combined = (lerf_mean - morf_mean) / 2`` in [-0.5, 0.5], high = faithful (as
  pytorch-grad-cam's ``ROADCombined``, which uses score differences; the base cancels).

Paper: Rong, Leemann, Borisov, Kasneci, Kasneci, "A Consistent and Efficient Evaluation
Strategy for Attribution Methods", ICML 2022, https://arxiv.org/abs/2202.00449
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from camscope.metrics.faithfulness import _check, _chunked_probs, saliency_rank
from camscope.metrics.gridsolve import bisect, stencil_fill

__all__ = [
    "NEIGHBOUR_STENCIL",
    "NEIGHBOUR_WEIGHTS",
    "ROAD",
    "ROAD_FRACTIONS",
    "ROAD_NOISE",
    "noisy_linear_impute",
    "removal_masks",
    "removal_signature",
    "road",
    "road_curve",
    "road_inputs",
]

#: (row offset, column offset, weight) of the 8 neighbours in the imputation (the paper's).
NEIGHBOUR_WEIGHTS: tuple[tuple[int, int, float], ...] = (
    (0, 1, 1 / 6),
    (0, -1, 1 / 6),
    (1, 0, 1 / 6),
    (-1, 0, 1 / 6),
    (1, 1, 1 / 12),
    (1, -1, 1 / 12),
    (-1, 1, 1 / 12),
    (-1, -1, 1 / 12),
)
#: The same weights as a (3, 3) float64 stencil, centre 0 (`camscope.metrics.gridsolve`'s form).
NEIGHBOUR_STENCIL = torch.zeros(3, 3, dtype=torch.float64)
for _dr, _dc, _weight in NEIGHBOUR_WEIGHTS:
    NEIGHBOUR_STENCIL[_dr + 1, _dc + 1] = _weight
#: The removed shares of pixels the paper evaluates.
ROAD_FRACTIONS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
#: Standard deviation of the imputation noise (in the units of the tensor imputed).
ROAD_NOISE = 0.01


def removal_masks(
    maps: torch.Tensor, fractions: Sequence[float], *, most_relevant_first: bool = True
) -> torch.Tensor:
    """Removed pixels, (N, F, H, W) bool: ``round(f * H * W)`` of them per fraction ``f``.

    MoRF removes the pixels first in `saliency_rank` (most salient), LeRF the last ones.
    """
    n, h, w = maps.shape
    rank = saliency_rank(maps)
    if not most_relevant_first:
        rank = h * w - 1 - rank
    counts = torch.tensor([round(f * h * w) for f in fractions], device=maps.device)
    if any(not 0 <= f <= 1 for f in fractions):
        raise ValueError(f"fractions must lie in [0, 1], got {tuple(fractions)}")
    return rank[:, None] < counts.view(1, -1, 1, 1)


def removal_signature(maps: torch.Tensor, fractions: Sequence[float]) -> torch.Tensor:
    """Which of ROAD's masks each pixel is in, (N, H*W) uint8: equal rows, equal masks.

    A pixel's entry counts the removal thresholds (``round(f * H * W)`` for MoRF,
    ``H * W - round(f * H * W)`` for LeRF) at or below its `saliency_rank`; two maps of an image
    with equal signatures have the same MoRF and LeRF masks at every fraction, hence the same
    ROAD values (the order inside a band does not matter).
    """
    n, h, w = maps.shape
    counts = [round(f * h * w) for f in fractions]
    cuts = torch.tensor(sorted({*counts, *(h * w - c for c in counts)}), device=maps.device)
    rank = saliency_rank(maps).flatten(1)
    return torch.searchsorted(cuts, rank, right=True).to(torch.uint8)


@functools.lru_cache(maxsize=8)
def _dissection_rank(h: int, w: int) -> np.ndarray:
    """Each pixel's position in a nested-dissection order of the (h, w) grid, (h*w,) int64.

    Recursive bisection (`camscope.metrics.gridsolve.bisect`, leaves of 64 pixels): the two
    halves of a rectangle first, the separating row or column last. The 8-neighbour stencil
    couples rows one apart only, so one row (column) separates; eliminating separators last
    bounds the fill of the factorisation (George, 1973). Restricted to any set of removed
    pixels it is still a fill-reducing order (separators stay separators), so one order of the
    grid serves every mask.
    """
    flat = np.concatenate([node.pixels for node in bisect(h, w, 64)])  # separators last
    rank = np.empty(h * w, dtype=np.int64)
    rank[flat] = np.arange(h * w)
    return rank


def _system(removed: np.ndarray) -> tuple[object, np.ndarray, list[tuple]]:
    """The sparse system ``A v = B x`` of the removed pixels of (B, H, W) masks.

    Unknowns are numbered image by image, each image's in `_dissection_rank` order, so the
    matrix is block diagonal with fill-reducing blocks. ``A`` is symmetric, so its rows,
    built as a (U, 9) table of (diagonal, 8 neighbours), are its columns: it is assembled as
    CSC directly. Returns (A, unknown flat indices u, [(rows, cols, weight) of known
    neighbours]).
    """
    from scipy import sparse  # a dependency of scikit-image; imported here to keep import light

    b, h, w = removed.shape
    nd_order = np.argsort(_dissection_rank(h, w)).astype(np.int32)
    img, pos = np.nonzero(removed.reshape(b, -1)[:, nd_order])  # sorted: image, then ND rank
    pix = nd_order[pos]
    unknown = img.astype(np.int64) * (h * w) + pix
    slot = np.full(removed.size, -1, dtype=np.int32)
    slot[unknown] = np.arange(unknown.size, dtype=np.int32)
    r, c = np.divmod(pix, w)
    cols = np.empty((unknown.size, 9), dtype=np.int32)
    vals = np.zeros((unknown.size, 9))
    cols[:, 0] = np.arange(unknown.size, dtype=np.int32)
    known = []
    for k, (dr, dc, weight) in enumerate(NEIGHBOUR_WEIGHTS, start=1):  # 8 vectorised offsets
        inside = (r + dr >= 0) & (r + dr < h) & (c + dc >= 0) & (c + dc < w)
        nb = np.where(inside, unknown + (dr * w + dc), 0)
        inner = np.where(inside, slot[nb], -1)
        vals[:, 0] += np.where(inside, weight, 0.0)
        vals[:, k] = np.where(inner >= 0, -weight, 0.0)
        cols[:, k] = inner
        eq = np.flatnonzero(inside & (inner < 0))
        known.append((eq, nb[eq], weight))
    keep = cols >= 0
    indptr = np.zeros(unknown.size + 1, dtype=np.int64)
    np.cumsum(keep.sum(axis=1), out=indptr[1:])
    a = sparse.csc_matrix((vals[keep], cols[keep], indptr), shape=(unknown.size, unknown.size))
    return a, unknown, known


Generators = torch.Generator | Sequence[torch.Generator] | None


def _noise(mask: np.ndarray, channels: int, generator: Generators) -> torch.Tensor:
    """N(0, 1) for every removed pixel (flat order) and channel, (U, C) float64.

    A sequence of generators gives each image its own (drawn from ``generator[b]``), so an
    image's noise does not depend on which images share its batch.
    """
    if generator is None or isinstance(generator, torch.Generator):
        return torch.randn(int(mask.sum()), channels, generator=generator, dtype=torch.float64)
    if len(generator) != len(mask):
        raise ValueError(f"{len(generator)} generators for {len(mask)} images")
    counts = mask.reshape(len(mask), -1).sum(axis=1)
    # one draw per image from its own generator: a loop over images, not pixels
    return torch.cat(
        [
            torch.randn(int(c), channels, generator=g, dtype=torch.float64)
            for c, g in zip(counts, generator, strict=True)
        ]
    )


def _solve_blocks(a: Any, rhs: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Solve the block-diagonal CSC ``a`` one image's block at a time (sparse LU each).

    A block's columns hold rows of that block only, so it is cut from ``a``'s arrays without
    a copy of the rest; the unknowns are already in a fill-reducing order (`_system`), so the
    factorisation keeps it (``NATURAL``) and, the matrix being symmetric positive definite,
    needs no pivoting. SuperLU releases the GIL, so the blocks are factorised on
    ``torch.get_num_threads()`` threads at once (the thread budget the forward passes use);
    each block writes its own rows of the result, so the order of completion does not matter.
    """
    a.sort_indices()
    out = np.empty_like(rhs)
    ends = np.cumsum(counts)
    spans = [(s, e) for s, e in zip(ends - counts, ends, strict=True) if e > s]
    workers = min(torch.get_num_threads(), len(spans))
    if workers <= 1:
        for span in spans:
            _solve_block(a, rhs, out, span)
        return out
    with ThreadPoolExecutor(workers, thread_name_prefix="camscope-road") as pool:
        for _ in pool.map(functools.partial(_solve_block, a, rhs, out), spans):
            pass  # re-raises a block's error here
    return out


def _solve_block(a: Any, rhs: np.ndarray, out: np.ndarray, span: tuple[int, int]) -> None:
    """Factorise and solve the diagonal block ``span`` of ``a``, into ``out[span]``."""
    from scipy import sparse
    from scipy.sparse.linalg import splu

    start, end = span
    lo, hi = a.indptr[start], a.indptr[end]
    block = sparse.csc_matrix(
        (a.data[lo:hi], a.indices[lo:hi] - start, a.indptr[start : end + 1] - lo),
        shape=(end - start, end - start),
    )
    lu = splu(block, permc_spec="NATURAL", options={"SymmetricMode": True})
    out[start:end] = lu.solve(rhs[start:end])


def _solved(images: torch.Tensor, solve: np.ndarray) -> torch.Tensor:
    """``images`` with the ``solve`` pixels imputed, as (B*H*W, C) float64 pixel rows (CPU).

    On a CUDA device the systems are solved there with dense batched linear algebra
    (`camscope.metrics.gridsolve.stencil_fill`); elsewhere by sparse LU (`_solve_blocks`),
    the faster of the two on a CPU (BENCHMARKS.md). Both are exact to rounding.
    """
    b, ch, h, w = images.shape
    if images.device.type == "cuda" and solve.any():
        removed = torch.from_numpy(solve).to(images.device)
        dense = stencil_fill(images.detach().double(), removed, NEIGHBOUR_STENCIL)
        return dense.permute(0, 2, 3, 1).reshape(-1, ch).cpu()
    flat = images.detach().to("cpu", torch.float64).permute(0, 2, 3, 1).reshape(-1, ch).clone()
    if solve.any():
        a, unknown, known = _system(solve)
        values = flat.numpy()
        rhs = np.zeros((unknown.size, ch))
        for eq, nb, weight in known:
            rhs[eq] += weight * values[nb]  # eq unique within one offset
        counts = solve.reshape(b, -1).sum(axis=1)
        flat[torch.from_numpy(unknown)] = torch.from_numpy(_solve_blocks(a, rhs, counts))
    return flat


def noisy_linear_impute(
    images: torch.Tensor,
    removed: torch.Tensor,
    *,
    noise: float = ROAD_NOISE,
    generator: Generators = None,
) -> torch.Tensor:
    """ROAD's noisy linear imputation of the ``removed`` pixels of a batch, (B, C, H, W).

    For every removed pixel ``p``: ``sum_q w_q (v_p - v_q) = 0`` over its in-image neighbours
    ``q`` (`NEIGHBOUR_WEIGHTS`), with ``v_q`` the image's value where ``q`` is kept and the
    unknown where it is removed; solved in float64 for all channels at once (`_solved`: sparse
    LU per image on the CPU, dense batched on a CUDA device), then ``noise * N(0, 1)`` added
    to each imputed value (``generator`` seeds it: one generator, or one per image).
    An image with every pixel removed has no known value to spread: it becomes 0 (+ noise), the
    normalised-space zero, i.e. the dataset mean colour (as pytorch-grad-cam's solver returns).
    """
    if images.ndim != 4 or removed.shape != (images.shape[0], *images.shape[2:]):
        raise ValueError(
            f"images (B, C, H, W) and removed (B, H, W) expected, got {tuple(images.shape)} "
            f"and {tuple(removed.shape)}"
        )
    mask = removed.detach().cpu().numpy().astype(bool)
    b, ch, h, w = images.shape
    full = mask.reshape(b, -1).all(axis=1)  # nothing kept: no equation has a known term
    solve = mask.copy()
    solve[full] = False
    flat = _solved(images, solve)  # (B*H*W, C) float64 on the CPU, a fresh tensor
    flat.view(b, h * w, ch)[torch.from_numpy(full)] = 0.0
    if noise and mask.any():
        flat[torch.from_numpy(np.flatnonzero(mask))] += noise * _noise(mask, ch, generator)
    filled = flat.view(b, h, w, ch).permute(0, 3, 1, 2)
    return filled.contiguous().to(device=images.device, dtype=images.dtype)


def road_inputs(
    inputs: torch.Tensor,
    maps: torch.Tensor,
    *,
    fractions: Sequence[float] = ROAD_FRACTIONS,
    most_relevant_first: bool = True,
    noise: float = ROAD_NOISE,
    generator: Generators = None,
) -> torch.Tensor:
    """The imputed images of every (image, fraction), (N, F, C, H, W)."""
    n, c, h, w = inputs.shape
    removed = removal_masks(maps, fractions, most_relevant_first=most_relevant_first)
    f = removed.shape[1]
    repeated = inputs[:, None].expand(n, f, c, h, w).reshape(n * f, c, h, w)
    if generator is not None and not isinstance(generator, torch.Generator):
        generator = [g for g in generator for _ in range(f)]  # image i's rows draw from its own
    out = noisy_linear_impute(
        repeated, removed.reshape(n * f, h, w), noise=noise, generator=generator
    )
    return out.view(n, f, c, h, w)


def road_curve(
    model: nn.Module,
    inputs: torch.Tensor,
    maps: torch.Tensor,
    targets: torch.Tensor,
    *,
    most_relevant_first: bool = True,
    fractions: Sequence[float] = ROAD_FRACTIONS,
    noise: float = ROAD_NOISE,
    batch_size: int = 64,
    generator: Generators = None,
) -> torch.Tensor:
    """``p_c`` of each image after ROAD removal of each fraction, (N, F) float32.

    Imputation runs ``batch_size`` images at a time (one sparse solve each), then one batched
    forward pass of those images.
    """
    maps, targets = _check(inputs, maps, targets)
    n, f = len(inputs), len(fractions)
    out = torch.empty(n * f, dtype=torch.float32, device=inputs.device)
    per = max(1, batch_size // max(f, 1))
    for start in range(0, n, per):  # chunks of images, each chunk one solve + forwards
        sl = slice(start, min(start + per, n))
        imputed = road_inputs(
            inputs[sl],
            maps[sl],
            fractions=fractions,
            most_relevant_first=most_relevant_first,
            noise=noise,
            generator=_slice(generator, sl),
        ).flatten(0, 1)
        tg = targets[sl].repeat_interleave(f)
        probs = _chunked_probs(
            model,
            len(imputed),
            lambda i, im=imputed, t=tg: (im[i], t[i]),
            batch_size,
            inputs.device,
        )
        out[start * f : sl.stop * f] = probs
    return out.view(n, f)


def _slice(generator: Generators, sl: slice) -> Generators:
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    return list(generator)[sl]


@dataclass
class ROAD:
    """ROAD scores of N maps: ``morf`` / ``lerf`` (N, F) probabilities at ``fractions``."""

    fractions: tuple[float, ...]
    morf: torch.Tensor
    lerf: torch.Tensor

    @property
    def morf_mean(self) -> torch.Tensor:
        """(N,) mean MoRF probability over the fractions; lower = more faithful."""
        return self.morf.mean(dim=1)

    @property
    def lerf_mean(self) -> torch.Tensor:
        """(N,) mean LeRF probability over the fractions; higher = more faithful."""
        return self.lerf.mean(dim=1)

    @property
    def combined(self) -> torch.Tensor:
        """(N,) ``(lerf_mean - morf_mean) / 2`` in [-0.5, 0.5]; higher = more faithful."""
        return (self.lerf_mean - self.morf_mean) / 2


def road(
    model: nn.Module,
    inputs: torch.Tensor,
    maps: torch.Tensor,
    targets: torch.Tensor,
    *,
    fractions: Sequence[float] = ROAD_FRACTIONS,
    noise: float = ROAD_NOISE,
    batch_size: int = 64,
    generator: Generators = None,
) -> ROAD:
    """ROAD MoRF and LeRF at every fraction (Rong et al., ICML 2022); 2 N F forward passes.

    ``generator``: one for the batch, or one per image (then each image's noise is its own,
    whatever the batch: pass generators seeded per image for results that do not depend on
    batching).
    """
    kw = {
        "fractions": fractions,
        "noise": noise,
        "batch_size": batch_size,
        "generator": generator,
    }
    morf = road_curve(model, inputs, maps, targets, most_relevant_first=True, **kw)
    lerf = road_curve(model, inputs, maps, targets, most_relevant_first=False, **kw)
    return ROAD(tuple(float(f) for f in fractions), morf, lerf)
