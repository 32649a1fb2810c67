"""`camscope run` end to end on a folder that mixes good photos with bad inputs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from click.testing import CliRunner
from PIL import Image

from camscope.cli import main


def _make_inputs(root: Path) -> dict[str, Path]:
    good = root / "photos"
    nested = good / "nested"
    nested.mkdir(parents=True)
    files: dict[str, Path] = {}
    Image.fromarray(skimage.data.chelsea()).save(good / "cat.jpg")
    files["cat"] = good / "cat.jpg"
    Image.fromarray(skimage.data.coffee()).convert("L").save(nested / "coffee.png")  # grayscale
    files["gray"] = nested / "coffee.png"
    rgba = np.dstack(
        [skimage.data.rocket(), np.full(skimage.data.rocket().shape[:2], 128, np.uint8)]
    )
    Image.fromarray(rgba).save(nested / "cat.png")  # RGBA, and a stem that collides with cat.jpg
    files["rgba"] = nested / "cat.png"
    Image.new("RGB", (1, 1), (200, 10, 10)).save(good / "tiny.bmp")  # 1x1 pixel
    files["tiny"] = good / "tiny.bmp"
    (good / "empty.jpg").write_bytes(b"")
    files["empty"] = good / "empty.jpg"
    (good / "notes.png").write_text("this is not an image")
    files["text"] = good / "notes.png"
    data = (good / "cat.jpg").read_bytes()
    (good / "truncated.jpg").write_bytes(data[: len(data) // 3])
    files["truncated"] = good / "truncated.jpg"
    return files


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, Path, dict[str, Path]]:
    root = tmp_path_factory.mktemp("cli")
    files = _make_inputs(root)
    out = root / "out"
    result = CliRunner().invoke(
        main,
        [
            "run",
            str(root / "photos"),
            str(root / "missing.jpg"),
            "--out",
            str(out),
            "--model",
            "efficientnet_lite0",
            "--max-channels",
            "8",
            "--batch-size",
            "3",
            "--quiet",
        ],
    )
    return result, out, files


def test_exit_code_and_error_lines(cli_run):
    result, _out, files = cli_run
    assert result.exit_code == 1, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("camscope: error: ")]
    joined = "\n".join(errors)
    for key in ("empty", "text", "truncated"):
        assert str(files[key]) in joined, joined
    assert "missing.jpg: no such file or directory" in joined
    assert len(errors) == 4  # one line each, no tracebacks
    assert "Traceback" not in result.output


def test_layout_and_values(cli_run):
    _result, out, _files = cli_run
    with open(out / "predictions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    names = sorted(row["name"] for row in rows)
    assert len(names) == 4 and len(set(names)) == 4  # cat.jpg and nested/cat.png both kept
    assert "tiny" in names
    for method in ("gradcam", "ablationcam", "scorecam"):
        for name in names:
            cam = np.load(out / method / f"{name}.npy")
            assert cam.shape == (224, 224) and cam.dtype == np.float32
            assert np.isfinite(cam).all() and cam.min() >= 0 and cam.max() <= 1
            overlay = Image.open(out / method / f"{name}.png")
            assert overlay.size == (224, 224) and overlay.mode == "RGB"
    cat = next(row for row in rows if row["file"].endswith("cat.jpg"))
    assert 281 <= int(cat["top1_index"]) <= 285  # a cat class
    probs = [float(cat[f"top{k}_prob"]) for k in range(1, 6)]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001
    assert Image.open(out / "grid.png").size[0] > 0
    run = json.loads((out / "run.json").read_text())
    assert run["model"] == "efficientnet_lite0" and run["layer"] == "bn2"
    assert run["state"] == "complete"
    assert run["counts"]["explained"] == 4 and run["counts"]["failed"] == 4
    assert run["methods"] == ["gradcam", "ablationcam", "scorecam"]
    assert {f"method_{m}" for m in run["methods"]} <= set(run["seconds"])
    assert run["settings"]["method_options"]["scorecam"]["max_channels"] == 8
    assert run["weights_tag"] is None and "efficientnet" in run["weights_source"]
    assert not list(out.rglob("*.tmp"))  # nothing half-written


def test_usage_errors(tmp_path: Path):
    Image.fromarray(skimage.data.chelsea()).save(tmp_path / "cat.jpg")
    runner = CliRunner()
    base = ["run", str(tmp_path / "cat.jpg"), "--out", str(tmp_path / "o"), "--quiet"]
    cases = {
        "--methods=gradcam,nope": "unknown method",
        "--model=not_a_model_xyz": "unknown model",
        "--layer=layer99": "unknown layer",
        "--target=not a class name at all": "unknown class",
        "--target=5000": "out of range",
    }
    for arg, message in cases.items():
        extra = (
            [arg]
            if arg.startswith(("--methods", "--model"))
            else [arg, "--model=efficientnet_lite0"]
        )
        result = runner.invoke(main, base + extra)
        assert result.exit_code == 2, (arg, result.output)
        assert message in result.stderr, (arg, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_unwritable_output(tmp_path: Path):
    Image.fromarray(skimage.data.chelsea()).save(tmp_path / "cat.jpg")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = CliRunner().invoke(
        main,
        [
            "run",
            str(tmp_path / "cat.jpg"),
            "--out",
            str(blocker / "sub"),
            "--quiet",
            "--model",
            "efficientnet_lite0",
        ],
    )
    assert result.exit_code == 2
    assert "cannot be written" in result.stderr


def test_explicit_resnet50_never_falls_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from urllib.error import URLError

    import torchvision

    def offline(*_a, **_k):
        raise URLError("offline")

    monkeypatch.setattr(
        torchvision.models.ResNet50_Weights.IMAGENET1K_V1.__class__, "get_state_dict", offline
    )
    Image.fromarray(skimage.data.chelsea()).save(tmp_path / "cat.jpg")
    result = CliRunner().invoke(
        main,
        ["run", str(tmp_path / "cat.jpg"), "--out", str(tmp_path / "o"), "--model", "resnet50"],
    )
    assert result.exit_code == 2
    assert "--weights FILE" in result.stderr and "efficientnet_lite0" in result.stderr
