"""The dense batched stencil solver (camscope.metrics.gridsolve) against slow references.

References: the pixel-by-pixel dense float64 solve of test_metrics_road, camscope's sparse LU
path (noisy_linear_impute on the CPU) and the definition of a dissection (a partition whose
separators cut every 8-neighbour edge between the two halves).
"""

import numpy as np
import pytest
import torch
from test_metrics_road import reference_impute

from camscope.metrics import ROAD_FRACTIONS, gridsolve, noisy_linear_impute, removal_masks
from camscope.metrics.gridsolve import bisect, stencil_fill
from camscope.metrics.removal import NEIGHBOUR_STENCIL

STENCIL = NEIGHBOUR_STENCIL


def _cases(shape, n, seed):
    g = torch.Generator().manual_seed(seed)
    values = torch.randn(n, 3, *shape, generator=g, dtype=torch.float64)
    removed = torch.rand(n, *shape, generator=g) < torch.linspace(0.05, 0.95, n).view(n, 1, 1)
    removed[:, 0, 0] = False  # every system keeps a pixel
    return values, removed


@pytest.mark.parametrize("shape", [(1, 23), (2, 9), (5, 5), (13, 17), (31, 8)])
def test_stencil_fill_matches_pixel_by_pixel_dense_solve(shape):
    values, removed = _cases(shape, 4, seed=sum(shape))
    got = stencil_fill(values, removed, STENCIL)
    for v, r, out in zip(values, removed, got, strict=True):
        want = reference_impute(v.numpy(), r.numpy())
        np.testing.assert_allclose(out.numpy(), want, rtol=0, atol=1e-10)
    assert torch.equal(
        got[~removed[:, None].expand_as(got)], values[~removed[:, None].expand_as(values)]
    )


def test_stencil_fill_matches_sparse_lu_on_road_masks():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 48, 40, generator=g, dtype=torch.float64)
    maps = torch.nn.functional.avg_pool2d(torch.rand(2, 1, 48, 40, generator=g), 7, 1, 3)[:, 0]
    removed = torch.cat(
        [removal_masks(maps, ROAD_FRACTIONS, most_relevant_first=m) for m in (True, False)], 1
    ).flatten(0, 1)
    images = x.repeat_interleave(2 * len(ROAD_FRACTIONS), 0)
    sparse = noisy_linear_impute(images, removed, noise=0)  # the CPU path: SuperLU
    dense = stencil_fill(images, removed, STENCIL)
    assert (dense - sparse).abs().max() < 1e-10


def test_an_asymmetric_stencil_is_refused():
    values, removed = _cases((5, 6), 1, seed=5)
    lopsided = STENCIL.clone()
    lopsided[0, 1] = 0.5
    with pytest.raises(ValueError, match="symmetric"):
        stencil_fill(values, removed, lopsided)


def test_chunks_do_not_change_the_solution(monkeypatch):
    values, removed = _cases((9, 11), 5, seed=3)
    whole = stencil_fill(values, removed, STENCIL)
    monkeypatch.setattr(gridsolve, "CHUNK", 2)
    assert torch.equal(stencil_fill(values, removed, STENCIL), whole)


@pytest.mark.parametrize("shape", [(1, 40), (7, 9), (30, 31), (64, 48)])
def test_bisect_is_a_dissection(shape):
    h, w = shape
    nodes = bisect(h, w, 16)
    flat = np.concatenate([n.pixels for n in nodes])
    assert np.array_equal(np.sort(flat), np.arange(h * w))  # every pixel once
    for i, node in enumerate(nodes):
        assert all(c < i for c in node.children)  # children first
        assert len(node.children) in (0, 2)
        if not node.children:
            r0, r1, c0, c1 = node.box
            assert len(node.pixels) == (r1 - r0) * (c1 - c0) <= 16
            continue
        halves = [_subtree(nodes, c) for c in node.children]
        (ar, ac), (br, bc) = (np.divmod(hv, w) for hv in halves)
        near = (np.abs(ar[:, None] - br) <= 1) & (np.abs(ac[:, None] - bc) <= 1)
        assert not near.any()  # the separator cuts every edge between the halves


def _subtree(nodes, i):
    return np.concatenate([nodes[i].pixels, *(_subtree(nodes, c) for c in nodes[i].children)])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_road_imputation_on_cuda_equals_the_cpu():
    values, removed = _cases((40, 36), 6, seed=4)
    cpu = noisy_linear_impute(values, removed, noise=0)
    cuda = noisy_linear_impute(values.cuda(), removed.cuda(), noise=0)
    assert cuda.device.type == "cuda"
    assert (cuda.cpu() - cpu).abs().max() < 1e-10
