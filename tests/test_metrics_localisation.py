"""Localisation (pointing game, energy game, relevance mass/rank), complexity and box loaders.

References: brute-force loops written from the papers' definitions (float64), and Quantus 0.6
where it implements the same metric (skipped without the ``crosscheck`` extra).
"""

import json
import math

import numpy as np
import pytest
import torch

from camscope.io.boxes import BoxError, box_masks, find_boxes, load_boxes
from camscope.metrics import (
    energy_pointing_game,
    entropy,
    pointing_game,
    relevance_mass,
    relevance_rank,
    sparseness,
)


@pytest.fixture
def case():
    rng = np.random.default_rng(0)
    maps = rng.random((5, 40, 36))
    regions = np.zeros((5, 40, 36), dtype=bool)
    regions[0, 5:15, 8:20] = True
    regions[1, 30:40, 0:6] = True
    regions[2, :, :] = True
    regions[3, 20, 20] = True  # one pixel
    # image 4: no ground truth
    maps[1, 2, 30] = 5.0  # far from its region
    maps[3, 20 + 9, 20 + 12] = 5.0  # 15 px from its one-pixel region: a hit at 15, not at 14
    return maps, regions


def brute_pointing(m, r, tol):
    if not r.any():
        return math.nan
    peaks = np.argwhere(m == m.max())
    gt = np.argwhere(r)
    return float(any(np.sqrt(((gt - p) ** 2).sum(1)).min() <= tol for p in peaks))


def test_pointing_game_matches_brute_force(case):
    maps, regions = case
    for tol in (0, 14, 15):
        got = pointing_game(torch.from_numpy(maps), torch.from_numpy(regions), tolerance=tol)
        want = [brute_pointing(m, r, tol) for m, r in zip(maps, regions, strict=True)]
        np.testing.assert_array_equal(got.numpy(), np.float32(want))
    got = pointing_game(torch.from_numpy(maps), torch.from_numpy(regions)).numpy()
    assert got[1] == 0 and got[2] == 1 and got[3] == 1 and np.isnan(got[4])
    flat = pointing_game(torch.ones(1, 8, 8), torch.ones(1, 8, 8, dtype=torch.bool))
    assert torch.isnan(flat).all()  # a constant map points nowhere


def test_mass_energy_rank_match_brute_force(case):
    maps, regions = case
    signed = maps - 0.3  # negative relevance is left out of the mass (Arras et al.)
    for i, (m, s, r) in enumerate(zip(maps, signed, regions, strict=True)):
        if not r.any():
            continue
        pos = np.clip(s, 0, None)
        mass = pos[r].sum() / pos.sum()
        norm = (m - m.min()) / (m.max() - m.min())
        energy = norm[r].sum() / norm.sum()
        k = int(r.sum())
        order = sorted(range(m.size), key=lambda j: (-m.flat[j], j))[:k]
        rank = sum(r.flat[j] for j in order) / k
        t = torch.from_numpy
        assert relevance_mass(t(signed), t(regions))[i].item() == pytest.approx(mass, abs=1e-6)
        assert energy_pointing_game(t(maps), t(regions))[i].item() == pytest.approx(
            energy, abs=1e-6
        )
        assert relevance_rank(t(maps), t(regions))[i].item() == pytest.approx(rank, abs=1e-6)
    for fn in (relevance_mass, energy_pointing_game, relevance_rank):
        assert torch.isnan(fn(torch.from_numpy(maps), torch.from_numpy(regions))[4])


def test_complexity_matches_brute_force():
    rng = np.random.default_rng(1)
    maps = rng.random((3, 9, 7)) - 0.2
    maps[2] = 0
    maps[2, 4, 4] = 2.0  # one pixel holds everything
    for i, m in enumerate(maps):
        a = np.sort(np.abs(m).ravel())
        n = a.size
        gini = sum((2 * (k + 1) - n - 1) * a[k] for k in range(n)) / (n * a.sum())
        p = np.abs(m).ravel() / np.abs(m).sum()
        h = -sum(v * math.log(v) for v in p if v > 0)
        assert sparseness(torch.from_numpy(maps))[i].item() == pytest.approx(gini, abs=1e-6)
        assert entropy(torch.from_numpy(maps))[i].item() == pytest.approx(h, abs=1e-5)
    assert entropy(torch.from_numpy(maps))[2] == 0
    assert sparseness(torch.from_numpy(maps))[2].item() == pytest.approx(1 - 1 / 63, abs=1e-6)
    assert torch.isnan(sparseness(torch.zeros(1, 4, 4))).all()
    assert torch.isnan(entropy(torch.zeros(1, 4, 4))).all()


# Quantus 0.6 --------------------------------------------------------------------------------


@pytest.fixture
def quantus():
    return pytest.importorskip("quantus", reason="Quantus is in the `crosscheck` extra")


def _quantus(metric, maps, regions):
    n = len(maps)
    kw = {
        "model": None,
        "x_batch": np.zeros((n, 3, *maps.shape[1:]), np.float32),
        "y_batch": np.zeros(n, int),
        "a_batch": maps[:, None].astype(np.float32),
        "s_batch": regions[:, None].astype(np.float32),
    }
    return np.asarray(metric(**kw), dtype=np.float64)


def test_localisation_agrees_with_quantus(quantus, case):
    maps, regions = case
    maps, regions = maps[:4], regions[:4]  # Quantus's pointing game turns "no region" into True
    t = torch.from_numpy
    kw = {"disable_warnings": True, "normalise": False, "abs": False}
    # Quantus's pointing game has no tolerance: it equals ours at tolerance 0
    np.testing.assert_array_equal(
        pointing_game(t(maps), t(regions), tolerance=0).numpy(),
        _quantus(quantus.PointingGame(**kw), maps, regions),
    )
    np.testing.assert_allclose(
        relevance_mass(t(maps), t(regions)).numpy(),
        _quantus(quantus.RelevanceMassAccuracy(**kw), maps, regions),
        atol=1e-6,
    )
    # ties do not occur in these maps, so Quantus's unstable argsort ranks as ours
    np.testing.assert_allclose(
        relevance_rank(t(maps), t(regions)).numpy(),
        _quantus(quantus.RelevanceRankAccuracy(**kw), maps, regions),
        atol=1e-6,
    )


def test_complexity_agrees_with_quantus(quantus, case):
    maps, regions = case
    kw = {"disable_warnings": True, "normalise": False, "abs": True}
    # Quantus adds 1e-7 to every value (Gini) and 1e-12 inside the log (entropy)
    np.testing.assert_allclose(
        sparseness(torch.from_numpy(maps)).numpy(),
        _quantus(quantus.Sparseness(**kw), maps, regions),
        atol=1e-5,
    )
    np.testing.assert_allclose(
        entropy(torch.from_numpy(maps)).numpy(),
        _quantus(quantus.Complexity(**kw), maps, regions),
        atol=1e-4,
    )


# box loaders --------------------------------------------------------------------------------


def test_csv_voc_coco_give_the_same_masks(tmp_path):
    (tmp_path / "b.csv").write_text(
        "file,x0,y0,x1,y1,class\na.jpg,10,20,110,70,dog\na.jpg,0,0,5,5,\n"
    )
    voc = tmp_path / "voc"
    voc.mkdir()
    (voc / "a.xml").write_text(
        "<annotation><filename>a.jpg</filename><size><width>200</width><height>100</height>"
        "</size><object><name>dog</name><bndbox><xmin>11</xmin><ymin>21</ymin><xmax>110</xmax>"
        "<ymax>70</ymax></bndbox></object><object><name>cat</name><bndbox><xmin>1</xmin>"
        "<ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox></object></annotation>"
    )
    coco = {
        "images": [{"id": 7, "file_name": "a.jpg", "width": 200, "height": 100}],
        "categories": [{"id": 1, "name": "dog"}],
        "annotations": [
            {"image_id": 7, "bbox": [10, 20, 100, 50], "category_id": 1},
            {"image_id": 7, "bbox": [0, 0, 5, 5], "category_id": 1},
        ],
    }
    (tmp_path / "c.json").write_text(json.dumps(coco))
    loaded = [load_boxes(tmp_path / "b.csv"), load_boxes(voc), load_boxes(tmp_path / "c.json")]
    for boxes in loaded:
        entry = find_boxes(boxes, "/some/where/a.jpg")
        np.testing.assert_allclose(entry.boxes, [[10, 20, 110, 70], [0, 0, 5, 5]])
        assert entry.labels[0] == "dog"
    assert loaded[1]["a.jpg"].size == (200, 100) == loaded[2]["a.jpg"].size
    mask = box_masks([loaded[0]["a.jpg"].boxes], [(200, 100)], (50, 100))[0]
    # the plain resize halves x and y: box 1 -> x 5..55, y 10..35 (pixel centres inside)
    brute = np.zeros((50, 100), bool)
    for r in range(50):
        for c in range(100):
            for x0, y0, x1, y1 in ((5, 10, 55, 35), (0, 0, 2.5, 2.5)):
                brute[r, c] |= x0 <= c + 0.5 <= x1 and y0 <= r + 0.5 <= y1
    np.testing.assert_array_equal(mask, brute)
    tiny = box_masks([np.array([[100.2, 50.1, 100.4, 50.3]])], [(200, 100)], (50, 100))[0]
    assert tiny.sum() == 1 and tiny[25, 50]  # smaller than a pixel: still one pixel
    assert not box_masks([None], [(10, 10)])[0].any()


@pytest.mark.parametrize(
    "name, text, match",
    [
        ("b.csv", "file,x0,y0\na.jpg,1,2\n", "columns"),
        ("b.csv", "file,x0,y0,x1,y1\na.jpg,5,5,1,9\n", "line 2"),
        ("b.json", "{}", "COCO"),
        ("b.txt", "", ".csv"),
    ],
)
def test_bad_box_files_are_one_line(tmp_path, name, text, match):
    (tmp_path / name).write_text(text)
    with pytest.raises(BoxError, match=match):
        load_boxes(tmp_path / name)


@pytest.mark.parametrize("radius", [1, 2.5, 7, 15])
def test_disk_dilation_matches_brute_force(radius):
    """The row-decomposed dilation equals a loop over every pixel pair (Euclidean disk)."""
    from camscope.metrics.localisation import _dilate

    rng = np.random.default_rng(int(radius * 10))
    regions = rng.random((3, 23, 19)) > 0.97
    regions[2] = False
    regions[2, 0, 18] = True  # a corner pixel: the disk is clipped by the border
    got = _dilate(torch.from_numpy(regions), radius).numpy()
    ys, xs = np.mgrid[:23, :19]
    for i in range(3):
        want = np.zeros((23, 19), dtype=bool)
        for y, x in np.argwhere(regions[i]):
            want |= (ys - y) ** 2 + (xs - x) ** 2 <= radius**2
        np.testing.assert_array_equal(got[i], want)
