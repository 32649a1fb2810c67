"""The new metrics in the run: ROAD and complexity with --metrics, localisation with --boxes."""

import logging

import numpy as np
import pytest
import torch

from camscope.io.boxes import box_masks
from camscope.metrics import relevance_mass
from camscope.run import RunConfig, UsageError, results, run_local
from tests.run_helpers import make_images


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("boxes")
    make_images(root / "in", 3, seed=3)
    # images are 64 x 48: img00's box covers the left half, img01 has a box, img02 none
    (root / "boxes.csv").write_text("file,x0,y0,x1,y1\nimg00.png,0,0,32,48\nimg01.png,10,5,50,40\n")
    config = RunConfig(
        inputs=(str(root / "in"),),
        out_dir=str(root / "out"),
        methods=("gradcam",),
        model="test_resnet",
        random_weights=True,
        metrics=True,
        steps=2,
        sanity_images=0,
        boxes=str(root / "boxes.csv"),
    )
    logger = logging.getLogger("camscope")
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger.addHandler(handler)
    try:
        run_local(config)
    finally:
        logger.removeHandler(handler)
    return root, records


def test_columns_are_filled(run):
    root, records = run
    rows = {r["name"]: r for r in results.read_table([root / "out"]).to_pylist()}
    assert set(rows) == {"img00", "img01", "img02"}
    for r in rows.values():
        assert (
            0 <= r["road_morf"] <= 1 and 0 <= r["road_lerf"] <= 1 and len(r["road_morf_curve"]) == 9
        )
        assert r["road_combined"] == pytest.approx((r["road_lerf"] - r["road_morf"]) / 2, abs=1e-6)
        assert 0 <= r["sparseness"] <= 1 and r["entropy"] > 0
    assert rows["img02"]["pointing_game"] is None and rows["img02"]["relevance_mass"] is None
    for name, box in (("img00", [0, 0, 32, 48]), ("img01", [10, 5, 50, 40])):
        r = rows[name]
        assert r["pointing_game"] in (0.0, 1.0)
        maps = np.load(results.map_path(root / "out", "gradcam", name))
        region = box_masks([np.array([box], float)], [(64, 48)], maps.shape)
        want = relevance_mass(torch.from_numpy(maps[None]), torch.from_numpy(region))[0]
        assert r["relevance_mass"] == pytest.approx(float(want), abs=1e-5)
    said = [r.getMessage() for r in records if "no boxes" in r.getMessage()]
    assert len(said) == 1 and "img02" in said[0]  # said once


def test_bad_boxes_file_is_a_usage_error(tmp_path):
    (tmp_path / "b.csv").write_text("file,x0\n")
    config = RunConfig(inputs=(str(tmp_path),), methods=("gradcam",), boxes=str(tmp_path / "b.csv"))
    with pytest.raises(UsageError, match="--boxes .*columns"):
        config.check()


def test_no_road_leaves_road_out_and_keeps_the_pre_road_settings(tmp_path):
    """--no-road: no ROAD columns, the other metrics as with ROAD, and the settings hash of a
    metrics run made before ROAD existed (no "road" key), so such a run resumes."""
    from click.testing import CliRunner

    from camscope.cli import main
    from camscope.run.config import prepare

    make_images(tmp_path / "in", 2, seed=5)
    common = dict(
        inputs=(str(tmp_path / "in"),),
        methods=("gradcam",),
        model="test_resnet",
        random_weights=True,
        metrics=True,
        steps=2,
        sanity_images=0,
    )
    without = RunConfig(out_dir=str(tmp_path / "a"), road=False, **common)
    with_road = RunConfig(out_dir=str(tmp_path / "b"), **common)
    assert "road" not in prepare(without).settings and "road" in prepare(with_road).settings
    run_local(without)
    run_local(with_road)
    a = {r["name"]: r for r in results.read_table([tmp_path / "a"]).to_pylist()}
    b = {r["name"]: r for r in results.read_table([tmp_path / "b"]).to_pylist()}
    for name in a:
        assert a[name]["road_morf"] is None and a[name]["road_morf_curve"] is None
        assert b[name]["road_morf"] is not None
        assert a[name]["deletion_auc"] == b[name]["deletion_auc"]
    # the CLI flag is generated from the same declaration
    out = CliRunner().invoke(main, ["run", "--help"])
    assert "--road / --no-road" in out.output


def test_road_is_measured_once_per_distinct_set_of_masks():
    """`_road_all` equals ROAD of each method alone; an image whose masks repeat is reused."""
    from camscope.run.explainer import _road_all, _road_columns

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(16, 5),
    ).eval()  # fmt: skip
    x = torch.randn(3, 3, 12, 10)
    a = torch.rand(3, 12, 10)
    b = torch.rand(3, 12, 10)
    b[[0, 2]] = a[[0, 2]] ** 3  # a monotone transform: the same order on images 0 and 2
    top = a.flatten(1).argsort(dim=1, descending=True)
    inside, across = a.clone(), a.clone()  # swap two pixels within one band, or across one
    for j in range(3):
        flat_in, flat_across = inside[j].view(-1), across[j].view(-1)
        p, q, r = top[j, 0], top[j, 1], top[j, 12]  # ranks 0, 1 (band 0) and 12 (10 % = 12 px)
        flat_in[p], flat_in[q] = a[j].view(-1)[q], a[j].view(-1)[p]
        flat_across[p], flat_across[r] = a[j].view(-1)[r], a[j].view(-1)[p]
    maps = {"a": a, "b": b, "c": torch.zeros(3, 12, 10), "d": 2 * a + 1, "e": inside,
            "f": across}  # fmt: skip
    targets, seeds = torch.tensor([0, 3, 1]), [11, 12, 13]
    got, reused = _road_all(model, x, maps, targets, seeds)
    assert reused == {"a": 0, "b": 2, "c": 0, "d": 3, "e": 3, "f": 0}
    for method, m in maps.items():
        want = _road_columns(model, x, m, targets, seeds)
        assert set(got[method]) == set(want)
        for name, value in want.items():
            torch.testing.assert_close(got[method][name], value, rtol=0, atol=1e-6)


def test_a_run_counts_the_reused_road_images(tmp_path):
    """ShapleyCAM's map before a global average pool is Grad-CAM's: its ROAD values are taken
    from Grad-CAM's, equal, and run.json counts the images."""
    import json

    make_images(tmp_path / "in", 2, seed=5)
    config = RunConfig(
        inputs=(str(tmp_path / "in"),), out_dir=str(tmp_path / "out"),
        methods=("gradcam", "shapleycam"), model="test_resnet", random_weights=True,
        metrics=True, steps=2, sanity_images=0,
    )  # fmt: skip
    run_local(config)
    rows = results.read_table([tmp_path / "out"]).to_pylist()
    counters = json.loads((tmp_path / "out" / "run.json").read_text())["method_counters"]
    same = 0
    for name in ("img00", "img01"):
        saved = [
            np.load(results.map_path(tmp_path / "out", m, name)) for m in ("gradcam", "shapleycam")
        ]
        value = {
            r["method"]: (r["road_morf_curve"], r["road_lerf_curve"])
            for r in rows
            if r["name"] == name
        }
        if np.array_equal(saved[0], saved[1]):
            same += 1
            assert value["gradcam"] == value["shapleycam"]
    assert same == 2  # the premise: the maps coincide
    assert counters["gradcam"]["road_reused_images"] == 0.0  # the first method measures all
    assert counters["shapleycam"]["road_reused_images"] == 2.0
