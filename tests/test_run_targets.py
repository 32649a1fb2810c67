"""``--target top1|truth|INDEX|NAME`` through the run, and failures that count in the exit code."""

from __future__ import annotations

import pytest
from run_helpers import MODEL, make_images

from camscope.cli import main
from camscope.run import RunConfig, results, run_local

pytestmark = pytest.mark.usefixtures("single_thread")


def _ok_rows(out):
    rows = results.read_table([out]).to_pylist()
    return {r["name"]: r for r in rows if r["status"] == "ok"}


def _config(inputs, out, **kw):
    return RunConfig(
        inputs=(str(inputs),),
        out_dir=str(out),
        model="test_resnet",
        random_weights=True,
        methods=("gradcam",),
        sanity_images=0,
        **kw,
    )


def test_truth_targets_each_image_and_fails_images_without_one(tmp_path):
    paths = make_images(tmp_path / "in", 3)
    labels = tmp_path / "labels.csv"
    labels.write_text(f"file,class_index\n{paths[0].name},7\n{paths[1].name},42\n")
    config = _config(tmp_path / "in", tmp_path / "out", target="truth", labels=str(labels))
    result = run_local(config)
    rows = _ok_rows(tmp_path / "out")
    assert {n: r["target_index"] for n, r in rows.items()} == {"img00": 7, "img01": 42}
    assert all(r["truth_index"] == r["target_index"] for r in rows.values())
    failed = [r for r in results.read_table([tmp_path / "out"]).to_pylist() if r["status"] != "ok"]
    assert [r["name"] for r in failed] == ["img02"] and "no true class" in failed[0]["error"]
    assert result.n_failed == 1 and not result.ok


def test_top1_equals_no_target_and_index_is_used_for_every_image(tmp_path):
    make_images(tmp_path / "in", 2)
    run_local(_config(tmp_path / "in", tmp_path / "a", target="top1"))
    run_local(_config(tmp_path / "in", tmp_path / "b", target=None))
    run_local(_config(tmp_path / "in", tmp_path / "c", target="3"))
    a, b, c = (_ok_rows(tmp_path / k) for k in "abc")
    assert {n: r["target_index"] for n, r in a.items()} == {
        n: r["top1_index"] for n, r in b.items()
    }
    assert {r["target_index"] for r in c.values()} == {3}


def test_cli_truth_for_an_image_without_one_is_one_line_and_exit_1(tmp_path):
    from click.testing import CliRunner

    make_images(tmp_path / "in", 1)
    args = ["run", str(tmp_path / "in"), "-o", str(tmp_path / "o"), *MODEL, "--target", "truth"]
    result = CliRunner().invoke(main, args)  # 1000 classes: wnids allowed; img00 has none
    assert result.exit_code == 1, result.output
    assert "no true class" in result.stderr


def test_explain_takes_a_plain_module_with_its_normalisation(tmp_path):
    import timm
    import torch

    import camscope

    torch.manual_seed(0)
    module = timm.create_model("test_resnet", pretrained=False).eval()
    make_images(tmp_path / "in", 2)
    with pytest.raises(camscope.run.UsageError, match="mean= and std="):
        camscope.explain([tmp_path / "in"], tmp_path / "x", model=module)
    result = camscope.explain(
        [tmp_path / "in"],
        tmp_path / "out",
        model=module,
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
        methods=("gradcam",),
        sanity_images=0,
    )
    assert result.ok and result.n_explained == 2
    assert not (tmp_path / "x").exists()
