"""Nested dissection of an image grid, and a batched dense solver of 3x3-stencil systems on it.

ROAD's imputation (`camscope.metrics.removal`) solves, for every (image, fraction), a sparse
symmetric positive definite system over the removed pixels of an image. On the CPU a sparse LU
per system is fastest; on an accelerator an irregular sparse factorisation is a poor fit, so
`stencil_fill` solves the same systems with dense batched linear algebra:

- **Every pixel is an unknown**: a kept pixel's equation is ``v_p = x_p``, coupled to nothing,
  so all systems of a batch share one sparsity pattern and one elimination tree.
- **Nested dissection** (George, 1973; `bisect`): a rectangle is split by its middle row or
  column (the separator) into two halves, recursively down to leaves of a few pixels; a 3x3
  stencil couples pixels one apart only, so the separator decouples the halves.
- **Multifrontal Cholesky** (Duff and Reid, 1983): a node's front holds its separator's
  unknowns followed by the ring of pixels around its rectangle (they lie on separators of its
  ancestors, eliminated later). Eliminating the separator leaves a dense Schur complement on
  the ring, added into the parent's front ("extend-add"). All nodes at one depth, padded to one
  size, and all systems are eliminated at once: one batched Cholesky, triangular solve and
  matrix product per depth; back substitution walks the depths in reverse.

Solved in float64, the result equals a sparse direct solve to rounding (tests compare it with
SuperLU and with a dense solve of the whole system).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

__all__ = ["Node", "bisect", "stencil_fill"]

#: Pixels in a leaf rectangle of the solver's tree (fewer flops than larger leaves: a leaf is
#: eliminated as one dense block).
LEAF = 16
#: Systems eliminated together: bounds the fronts' memory (about 30 MB per 224x224 system).
CHUNK = 64


class Node(NamedTuple):
    """A rectangle of the dissection: the pixels it eliminates, its box, its children."""

    pixels: np.ndarray  # flat indices: the separator, or every pixel of a leaf
    box: tuple[int, int, int, int]  # rows r0:r1, columns c0:c1
    children: tuple[int, ...]  # indices in the list `bisect` returns
    depth: int


def bisect(h: int, w: int, leaf: int) -> list[Node]:
    """Recursive bisection of the (h, w) grid, children before their parent (post-order).

    The longer side is halved by its middle row or column; rectangles of at most ``leaf``
    pixels (``leaf >= 4``, so that both halves are never empty) are leaves. The second half's
    subtree comes before the first's.
    """
    nodes: list[Node] = []

    def visit(r0: int, r1: int, c0: int, c1: int, depth: int) -> int:
        if (r1 - r0) * (c1 - c0) <= leaf:
            pixels, kids = (np.arange(r0, r1)[:, None] * w + np.arange(c0, c1)).ravel(), ()
        elif r1 - r0 >= c1 - c0:
            m = (r0 + r1) // 2
            second = visit(m + 1, r1, c0, c1, depth + 1)
            pixels, kids = m * w + np.arange(c0, c1), (visit(r0, m, c0, c1, depth + 1), second)
        else:
            m = (c0 + c1) // 2
            second = visit(r0, r1, m + 1, c1, depth + 1)
            pixels, kids = np.arange(r0, r1) * w + m, (visit(r0, r1, c0, m, depth + 1), second)
        nodes.append(Node(pixels, (r0, r1, c0, c1), kids, depth))
        return len(nodes) - 1

    visit(0, h, 0, w, 0)
    return nodes


def _ring(box: tuple[int, int, int, int], h: int, w: int) -> np.ndarray:
    """Flat indices of the in-image pixels 8-adjacent to the rectangle ``box``, outside it."""
    r0, r1, c0, c1 = box
    rows, cols = (
        np.arange(max(r0 - 1, 0), min(r1 + 1, h)),
        np.arange(max(c0 - 1, 0), min(c1 + 1, w)),
    )
    outside = ~((rows[:, None] >= r0) & (rows[:, None] < r1) & (cols >= c0) & (cols < c1))
    return (rows[:, None] * w + cols)[outside]


@dataclass(frozen=True)
class _Level:
    """The n nodes at one depth, padded to K separator and R ring pixels (padding: pixel H*W)."""

    sep: torch.Tensor  # (n, K)
    ring: torch.Tensor  # (n, R)
    code: torch.Tensor  # (n, K, K + R): 3x3 stencil position of front pixel j from sep pixel i
    children: tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor], ...]
    # per child slot: (parent (c,), child in the depth below (c,), positions of the child's
    # ring in the parent's front (c, R_below), padding = K + R)


def _padded(rows: list[np.ndarray], fill: int, width: int = 0) -> np.ndarray:
    """Rows of different lengths as one (len(rows), at least ``width``) array, ``fill`` after."""
    out = np.full((len(rows), max([width, *(len(r) for r in rows)])), fill, dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


def _codes(sep: np.ndarray, front: np.ndarray, h: int, w: int) -> torch.Tensor:
    """(n, K, m) index into a flat 3x3 stencil (+ a zero at 9) for each (sep, front) pair."""
    (pr, pc), (qr, qc) = np.divmod(sep, w), np.divmod(front, w)
    dr, dc = qr[:, None, :] - pr[:, :, None], qc[:, None, :] - pc[:, :, None]
    valid = (sep[:, :, None] < h * w) & (front[:, None, :] < h * w)
    near = valid & (np.abs(dr) <= 1) & (np.abs(dc) <= 1) & ((dr != 0) | (dc != 0))
    return torch.from_numpy(np.where(near, (dr + 1) * 3 + dc + 1, 9).astype(np.int64))


def _level(
    nodes: list[Node], ids: list[int], below: dict[int, tuple[int, np.ndarray]], h: int, w: int
) -> tuple[_Level, dict[int, tuple[int, np.ndarray]]]:
    """Pad one depth's nodes; ``below`` maps a node of the depth below to (slot, ring)."""
    rings = [_ring(nodes[i].box, h, w) for i in ids]
    sep, ring = _padded([nodes[i].pixels for i in ids], h * w), _padded(rings, h * w)
    front, m = np.concatenate([sep, ring], axis=1), sep.shape[1] + ring.shape[1]
    children = []
    for t in (0, 1):
        parent, child, pos = [], [], []
        for a, i in enumerate(ids):
            if len(nodes[i].children) > t:
                slot, child_ring = below[nodes[i].children[t]]
                order = np.argsort(front[a], kind="stable")
                at = order[np.searchsorted(front[a], child_ring, sorter=order)]
                if not np.array_equal(front[a][at], child_ring):  # a ring lies on ancestors
                    raise AssertionError(f"node {i}: a child's ring leaves its front")
                parent.append(a), child.append(slot), pos.append(at)
        if parent:
            width = max(len(r) for _, r in below.values())  # the depth below's padded ring
            pos_t = torch.from_numpy(_padded(pos, m, width))
            children.append((torch.tensor(parent), torch.tensor(child), pos_t))
    level = _Level(
        torch.from_numpy(sep), torch.from_numpy(ring), _codes(sep, front, h, w), tuple(children)
    )
    return level, {i: (a, rings[a]) for a, i in enumerate(ids)}


@functools.lru_cache(maxsize=4)
def _plan(h: int, w: int, device: torch.device) -> tuple[_Level, ...]:
    """The solver's levels for an (h, w) grid on ``device``, deepest first (cached)."""
    levels = _cpu_plan(h, w)
    if device.type == "cpu":
        return levels
    return tuple(
        _Level(lv.sep.to(device), lv.ring.to(device), lv.code.to(device),
               tuple(tuple(t.to(device) for t in kid) for kid in lv.children))
        for lv in levels
    )  # fmt: skip


@functools.lru_cache(maxsize=4)
def _cpu_plan(h: int, w: int) -> tuple[_Level, ...]:
    """The solver's levels for an (h, w) grid, deepest first (built once per size)."""
    nodes = bisect(h, w, LEAF)
    levels, below = [], {}
    for depth in range(max(n.depth for n in nodes), -1, -1):
        ids = [i for i, n in enumerate(nodes) if n.depth == depth]
        level, below = _level(nodes, ids, below, h, w)
        levels.append(level)
    return tuple(levels)


def _assemble(
    level: _Level,
    rem: torch.Tensor,
    diag: torch.Tensor,
    rhs: torch.Tensor,
    stencil: torch.Tensor,
    below: tuple[torch.Tensor, torch.Tensor] | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The fronts (S, n, m+1, m+1) and their right-hand sides (S, n, m+1, C) of one depth.

    Row/column m is a sink for padding. A separator pixel's row holds its stencil couplings to
    the front (zero unless both pixels are removed) and its diagonal (the stencil's in-image
    weight sum if removed, else 1); ``below`` (the children's Schur complements and updated
    right-hand sides) is added at their rings' positions.
    """
    k, m = level.sep.shape[1], level.code.shape[2]
    front = torch.cat([level.sep, level.ring], dim=1)
    r_sep = rem[:, level.sep]
    weights = torch.cat([stencil.flatten(), stencil.new_zeros(1)])[level.code]
    f = rem.new_zeros(rem.shape[0], len(front), m + 1, m + 1)
    f[:, :, :k, :m] = -weights * r_sep[..., None] * rem[:, front][:, :, None, :]
    eye = torch.arange(k, device=rem.device)
    f[:, :, eye, eye] = r_sep * diag[level.sep] + (1 - r_sep)
    f[:, :, k:m, :k] = f[:, :, :k, k:m].transpose(-1, -2)
    b = rem.new_zeros(rem.shape[0], len(front), m + 1, rhs.shape[-1])
    b[:, :, :k] = rhs[:, level.sep]
    for parent, child, pos in level.children if below is not None else ():
        f[:, parent[:, None, None], pos[:, :, None], pos[:, None, :]] += below[0][:, child]
        b[:, parent[:, None], pos] += below[1][:, child]
    return f, b


def _eliminate(f: torch.Tensor, b: torch.Tensor, k: int) -> tuple[tuple, tuple]:
    """Eliminate the first k unknowns of every front: (factors kept, Schur complement passed up).

    ``L = chol(F_ss)``, ``W = L^-1 F_sr``, ``z = L^-1 b_s``; the ring receives
    ``F_rr - W^T W`` and ``b_r - W^T z``.
    """
    m = f.shape[-1] - 1
    low = torch.linalg.cholesky(f[..., :k, :k])
    wt = torch.linalg.solve_triangular(low, f[..., :k, k:m], upper=False)
    z = torch.linalg.solve_triangular(low, b[..., :k, :], upper=False)
    schur = f[..., k:m, k:m] - wt.transpose(-1, -2) @ wt
    return (low, wt, z), (schur, b[..., k:m, :] - wt.transpose(-1, -2) @ z)


def _fill_chunk(values: torch.Tensor, removed: torch.Tensor, stencil: torch.Tensor) -> torch.Tensor:
    """`stencil_fill` of at most `CHUNK` systems."""
    s, c, h, w = values.shape
    rem = torch.cat([removed.flatten(1).to(values.dtype), values.new_zeros(s, 1)], dim=1)
    kernel = stencil.view(1, 1, 3, 3)
    ones = values.new_ones(1, 1, h, w)
    diag = torch.nn.functional.conv2d(ones, kernel, padding=1).flatten()
    diag = torch.cat([diag, diag.new_ones(1)])
    kept = values * (1 - rem[:, :-1].view(s, 1, h, w))
    near = torch.nn.functional.conv2d(kept.view(s * c, 1, h, w), kernel, padding=1)
    rhs = torch.where(removed[:, None], near.view(s, c, h, w), values).flatten(2).transpose(1, 2)
    rhs = torch.cat([rhs, rhs.new_zeros(s, 1, c)], dim=1)  # (S, H*W + 1, C)
    levels, saved, below = _plan(h, w, values.device), [], None
    for level in levels:
        factors, below = _eliminate(
            *_assemble(level, rem, diag, rhs, stencil, below), level.sep.shape[1]
        )
        saved.append(factors)
    x = values.new_zeros(s, h * w + 1, c)
    for level, (low, wt, z) in zip(reversed(levels), reversed(saved), strict=True):
        ring = x[:, level.ring]
        sol = torch.linalg.solve_triangular(low.transpose(-1, -2), z - wt @ ring, upper=True)
        x[:, level.sep] = sol
    return x[:, : h * w].transpose(1, 2).reshape(s, c, h, w)


def stencil_fill(
    values: torch.Tensor, removed: torch.Tensor, stencil: torch.Tensor
) -> torch.Tensor:
    """Solve every system ``sum_q s_q (v_p - v_q) = 0`` at the removed pixels, (S, C, H, W).

    ``values`` (S, C, H, W) float64, ``removed`` (S, H, W) bool, ``stencil`` (3, 3): the
    symmetric weight ``s_q`` of each neighbour (centre ignored); neighbours outside the image are
    left out and kept neighbours enter with their value. Kept pixels are returned unchanged. Each
    system must keep at least one pixel (else it is singular). Runs on ``values``' device,
    `CHUNK` systems at a time.
    """
    stencil = stencil.to(values).clone()
    stencil[1, 1] = 0.0
    if stencil.shape != (3, 3) or not torch.equal(stencil, stencil.flip(0, 1)):
        raise ValueError("stencil must be a symmetric (3, 3) tensor: w(d) = w(-d)")
    removed = removed.to(values.device).bool()
    parts = [
        _fill_chunk(values[i : i + CHUNK], removed[i : i + CHUNK], stencil)
        for i in range(0, len(values), CHUNK)
    ]
    return torch.cat(parts) if parts else values.clone()
