"""`camscope evaluate DIR` on intact and damaged run folders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from run_helpers import make_images

from camscope.cli import main
from camscope.run import RunConfig, results, run_local

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A run without metrics and the same run with --metrics (steps 4) as the reference."""
    root = tmp_path_factory.mktemp("eval")
    make_images(root / "in", 5, seed=7)
    base = dict(
        inputs=(str(root / "in"),),
        methods=("gradcam", "ablationcam"),
        model="test_resnet",
        random_weights=True,
        batch_size=3,
        sanity_images=0,
    )
    run_local(RunConfig(out_dir=str(root / "plain"), **base))
    run_local(RunConfig(out_dir=str(root / "measured"), metrics=True, steps=4, **base))
    return root


def _rows(out: Path) -> dict:
    rows = results.read_table([out]).drop_columns(["run_dir"]).to_pylist()
    return {(r["name"], r["method"]): r for r in rows if r["status"] == "ok"}


def _evaluate(run_dir: Path, *extra: str):
    args = ["evaluate", str(run_dir), "--steps", "4", "--sanity-images", "0", "-q", *extra]
    return CliRunner().invoke(main, args)


def test_evaluate_intact_equals_run_with_metrics(runs, tmp_path):
    run_dir = tmp_path / "plain"
    shutil.copytree(runs / "plain", run_dir)
    result = _evaluate(run_dir)
    assert result.exit_code == 0, result.output
    got, want = _rows(run_dir), _rows(runs / "measured")
    assert set(got) == set(want)
    for ident, row in want.items():
        for key in ("deletion_auc", "insertion_auc", "average_drop", "explanation_prob"):
            assert got[ident][key] == pytest.approx(row[key], abs=1e-5), (ident, key)
        assert got[ident]["settings_hash"] == row["settings_hash"]
    run = json.loads((run_dir / "run.json").read_text())
    assert run["settings"]["metrics"] is True and run["settings"]["steps"] == 4
    assert (run_dir / "metrics.csv").is_file() and (run_dir / "report.html").is_file()


def test_damaged_maps_refused_one_line_each_exit_1(runs, tmp_path):
    run_dir = tmp_path / "damaged"
    shutil.copytree(runs / "plain", run_dir)
    paths = {
        k: results.map_path(run_dir, "gradcam", f"img0{i}")
        for i, k in enumerate(("missing", "garbage", "shape", "nan"))
    }
    paths["missing"].unlink()
    paths["garbage"].write_bytes(b"\x93NUMPY garbage")
    np.save(paths["shape"], np.zeros((10, 10), np.float32))
    bad = np.load(paths["nan"])
    bad[3, 3] = np.nan
    np.save(paths["nan"], bad)
    result = _evaluate(run_dir)
    assert result.exit_code == 1
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("camscope: error:")]
    assert len(errors) == 4, result.stderr
    for kind, path in paths.items():
        assert sum(str(path) in ln for ln in errors) == 1, (kind, errors)
    rows = _rows(run_dir)
    for i in range(4):  # refused, not measured
        assert rows[(f"img0{i}", "gradcam")]["deletion_auc"] is None
        assert rows[(f"img0{i}", "ablationcam")]["deletion_auc"] is not None
    assert rows[("img04", "gradcam")]["deletion_auc"] is not None


def test_broken_run_json_and_labels_named(runs, tmp_path):
    run_dir = tmp_path / "broken"
    shutil.copytree(runs / "plain", run_dir)
    labels = tmp_path / "labels.csv"
    labels.write_bytes(b"\xff\xfe garbage")
    result = _evaluate(run_dir, "--labels", str(labels))
    assert result.exit_code == 2 and str(labels) in result.stderr, result.stderr
    (run_dir / "run.json").write_text("{not json")
    result = _evaluate(run_dir)
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        ln for ln in result.stderr.strip().splitlines() if str(run_dir / "run.json") in ln
    ]


def test_evaluate_without_saved_maps_uses_the_table(runs, tmp_path):
    """--save-maps none: the maps come from the table's feature-resolution maps."""
    config = RunConfig(
        inputs=(str(runs / "in"),),
        out_dir=str(tmp_path / "none"),
        methods=("gradcam",),
        model="test_resnet",
        random_weights=True,
        batch_size=3,
        save_maps="none",
    )
    run_local(config)
    assert not (tmp_path / "none" / "gradcam").exists()
    result = _evaluate(tmp_path / "none")
    assert result.exit_code == 0, result.output
    got, want = _rows(tmp_path / "none"), _rows(runs / "measured")
    for (name, method), row in got.items():
        ref = want[(name, method)]
        for key in ("deletion_auc", "insertion_auc", "average_drop"):
            assert row[key] == pytest.approx(ref[key], abs=1e-5), (name, key)
