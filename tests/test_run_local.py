"""The in-process run (camscope.run.local): streaming pass, resume, settings, overwrite."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from run_helpers import make_images

from camscope.methods import normalise_maps
from camscope.run import RunConfig, UsageError, results, run_local

pytestmark = pytest.mark.usefixtures("single_thread")

BASE = dict(
    model="test_resnet",
    random_weights=True,
    methods=("gradcam", "ablationcam"),
    batch_size=2,
    sanity_images=0,
)


def _config(inputs: Path, out: Path, **kw) -> RunConfig:
    return RunConfig(inputs=(str(inputs),), out_dir=str(out), **{**BASE, **kw})


def _table(out: Path) -> dict[tuple[str, str], dict]:
    rows = results.read_table([out]).drop_columns(["run_dir"]).to_pylist()
    return {(r["name"], r["method"]): r for r in rows if r["status"] == "ok"}


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("local")
    make_images(root / "in", 5)
    result = run_local(_config(root / "in", root / "full", metrics=True, steps=4))
    return root, result


def test_streaming_run_writes_table_files_and_state(full_run):
    root, result = full_run
    out = root / "full"
    assert result.state == "complete" and result.n_explained == 5 and result.ok
    table = _table(out)
    assert len(table) == 10
    run = json.loads((out / "run.json").read_text())
    assert (
        run["state"] == "complete"
        and run["settings_hash"] == table[("img00", "gradcam")]["settings_hash"]
    )
    for (name, method), row in table.items():
        saved = np.load(results.map_path(out, method, name))
        assert saved.shape == (224, 224) and saved.dtype == np.float32
        # the table's feature-resolution map gives the saved map (same normalisation)
        raw = torch.tensor(row["raw"]).view(1, row["raw_h"], row["raw_w"])
        np.testing.assert_allclose(normalise_maps(raw, (224, 224))[0][0].numpy(), saved, atol=1e-6)
        assert 0 <= row["deletion_auc"] <= 1 and 0 <= row["insertion_auc"] <= 1
        assert len(row["deletion_curve"]) == 5
        # share of pixels above one half, recomputed from the saved map
        assert row["share_above_half"] == pytest.approx(float((saved > 0.5).mean()), abs=1e-6)
        other = "ablationcam" if method == "gradcam" else "gradcam"
        a, b = saved.ravel().astype(np.float64), np.load(results.map_path(out, other, name))
        r = np.corrcoef(a, b.ravel().astype(np.float64))[0, 1]
        assert row[f"pearson__{other}"] == pytest.approx(r, abs=1e-4)
    for name in ("predictions.csv", "metrics.csv", "report.html", "grid.png"):
        assert (out / name).is_file(), name
    assert not list(out.rglob("*.tmp"))


def test_resume_skips_done_and_equals_uninterrupted(full_run, tmp_path):
    root, _ = full_run
    partial = tmp_path / "partial"
    first = run_local(_config(root / "in", partial, metrics=True, steps=4, batch_size=3))
    assert first.n_explained == 5
    # forget two images: as if the run had been killed after the first part
    parts = results.part_files(partial)
    parts[-1].unlink()
    again = run_local(_config(root / "in", partial, metrics=True, steps=4, batch_size=3))
    assert again.n_done_before == 3 and again.n_explained == 2
    want, got = _table(root / "full"), _table(partial)
    assert set(want) == set(got)
    for ident, row in want.items():
        np.testing.assert_allclose(got[ident]["raw"], row["raw"], atol=1e-6)
        for key in ("deletion_auc", "insertion_auc", "average_drop", "base_prob"):
            assert got[ident][key] == pytest.approx(row[key], abs=1e-5), (ident, key)
        m_want = np.load(results.map_path(root / "full", ident[1], ident[0]))
        m_got = np.load(results.map_path(partial, ident[1], ident[0]))
        np.testing.assert_allclose(m_got, m_want, atol=1e-6)


def test_other_settings_refused_overwrite_replaces(full_run, tmp_path):
    root, _ = full_run
    out = tmp_path / "o"
    run_local(_config(root / "in", out, methods=("gradcam",)))
    with pytest.raises(UsageError, match="methods"):
        run_local(_config(root / "in", out))
    with pytest.raises(UsageError, match="metrics"):
        run_local(_config(root / "in", out, methods=("gradcam",), metrics=True))
    (out / "notes.txt").write_text("mine")
    result = run_local(_config(root / "in", out, overwrite=True))
    assert result.n_explained == 5 and result.n_done_before == 0
    assert (out / "notes.txt").read_text() == "mine"  # not a run file: kept
    assert {m for _, m in _table(out)} == {"gradcam", "ablationcam"}
    assert len(results.part_files(out)) == 3  # the old run's parts are gone


def test_stale_outputs_are_never_mixed(full_run, tmp_path):
    root, _ = full_run
    out = tmp_path / "stale"
    (out / "gradcam").mkdir(parents=True)
    (out / "gradcam" / "old.png").write_bytes(b"png")
    (out / "predictions.csv").write_text("name\nold\n")
    with pytest.raises(UsageError, match="not a camscope 0.2 run"):
        run_local(_config(root / "in", out))
    assert (out / "predictions.csv").read_text() == "name\nold\n"
    run_local(_config(root / "in", out, overwrite=True))
    assert not (out / "gradcam" / "old.png").exists()


def test_output_inside_input_is_not_read_back(full_run, tmp_path):
    root, _ = full_run
    inputs = tmp_path / "photos"
    make_images(inputs, 2)
    out = inputs / "camscope-output"
    assert run_local(_config(inputs, out, methods=("gradcam",))).n_explained == 2
    again = run_local(_config(inputs, out, methods=("gradcam",)))
    assert again.n_total == 2 and again.n_explained == 0


def test_inputs_given_inside_the_run_folder_are_taken(tmp_path):
    run_dir = tmp_path / "demo"
    make_images(run_dir / "inputs", 2)  # `camscope demo` writes its inputs into DIR/inputs
    assert run_local(_config(run_dir / "inputs", run_dir, methods=("gradcam",))).n_explained == 2
    again = run_local(_config(run_dir / "inputs", run_dir, methods=("gradcam",)))
    assert again.n_total == 2 and again.n_done_before == 2  # DIR/gradcam/*.png are not inputs


def test_rerun_over_a_finished_run_does_no_work(full_run):
    root, _ = full_run
    out = root / "full"
    before = {p.name: p.stat().st_mtime_ns for p in (out / "report.html", out / "grid.png")}
    again = run_local(_config(root / "in", out, metrics=True, steps=4))
    assert again.state == "complete" and again.n_explained == 0 and again.n_done_before == 5
    assert {p: (out / p).stat().st_mtime_ns for p in before} == before  # report kept
    assert json.loads((out / "run.json").read_text())["state"] == "complete"


def test_library_explain_with_a_loaded_model(full_run, tmp_path):
    import camscope
    from camscope.run.testing import random_model

    root, _ = full_run
    loaded = random_model("test_resnet")
    result = camscope.explain([root / "in"], tmp_path / "api", model=loaded, methods=["gradcam"])
    assert isinstance(result, camscope.RunResult) and result.ok and result.n_explained == 5
    want = _table(root / "full")
    for (name, method), row in _table(tmp_path / "api").items():
        np.testing.assert_allclose(row["raw"], want[(name, method)]["raw"], rtol=1e-5, atol=1e-7)
