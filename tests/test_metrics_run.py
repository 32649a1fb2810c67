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
