"""Every option is checked before the first image, and a usage error leaves nothing behind."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from run_helpers import MODEL, make_images

from camscope.cli import main
from camscope.run import RunConfig, UsageError, prepare, probe_device
from camscope.run.config import settings_hash


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cfg") / "in"
    make_images(folder, 2)
    return folder


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--steps", "0", "--metrics"], "--steps must be an integer >= 1"),
        (["--max-pixels", "0"], "--max-pixels must be an integer >= 1"),
        (["--max-pixels", "-5"], "--max-pixels must be an integer >= 1"),
        (["--batch-size", "0"], "--batch-size"),
        (["--device", "meta"], "--device meta: cannot compute"),
        (["--device", "mps"], "--device mps"),
        (["--device", "nonsense"], "unknown device"),
        (["--layer", "fc"], "--layer fc"),
        (["--layer", "global_pool"], "no spatial positions"),
        (["--methods", "gradcam,nope"], "unknown method"),
        (["--max-channels", "4", "--methods", "gradcam"], "max_channels"),
        (["--shard", "3/3"], "--shard 3/3"),
        (["--target", "5000"], "out of range"),
        (["--metrics", "--labels", __file__], "--labels"),
    ],
)
def test_usage_error_exit_2_one_line_nothing_written(images, tmp_path, args, message):
    out = tmp_path / "deep" / "out"
    result = CliRunner().invoke(main, ["run", str(images), "-o", str(out), *MODEL, *args])
    assert result.exit_code == 2, (args, result.output)
    assert message in result.stderr, (args, result.stderr)
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "deep").exists()  # nothing left behind


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_gpu_is_a_usage_error():
    with pytest.raises(UsageError, match="--device cuda"):
        probe_device("cuda")


def test_settings_hash_tracks_result_settings(images, tmp_path):
    base = RunConfig(
        inputs=(str(images),),
        out_dir=str(tmp_path / "o"),
        methods=("gradcam",),
        model="test_resnet",
        random_weights=True,
    )
    ctx = prepare(base)
    assert not (tmp_path / "o").exists()
    assert ctx.settings["layer"] == "layer4.0" and ctx.settings["weights"].startswith("random")
    same = prepare(RunConfig(**{**base.__dict__, "batch_size": 3, "max_pixels": 10**6}))
    assert same.settings_hash == ctx.settings_hash  # batching does not change results
    for change in ({"metrics": True}, {"layer": "layer3"}, {"save_maps": "png"}, {"target": 3}):
        other = prepare(RunConfig(**{**base.__dict__, **change}))
        assert other.settings_hash != ctx.settings_hash, change
    assert settings_hash({"a": 1, "b": 2}) == settings_hash({"b": 2, "a": 1})
