"""The end of a run is protected: a file that cannot be written is one line, the rest survives."""

from __future__ import annotations

import errno
import importlib
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from run_helpers import MODEL, make_images

import camscope.run.folder as folder_module
from camscope.cli import main

# the package exports the function `finalize`, which hides the module of the same name
finalize_module = importlib.import_module("camscope.run.finalize")


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("fin") / "in"
    make_images(folder, 2)
    return folder


def _run(images: Path, out: Path):
    return CliRunner().invoke(
        main, ["run", str(images), "-o", str(out), *MODEL, "-m", "gradcam", "-q"]
    )


def test_run_json_unwritable_at_the_end(images, tmp_path, monkeypatch):
    real, calls = folder_module.write_json, []

    def disk_full(path, obj):
        calls.append(path)
        if len(calls) > 1:  # the start of the run works, the end finds the disk full
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, obj)

    monkeypatch.setattr(folder_module, "write_json", disk_full)
    result = _run(images, tmp_path / "out")
    assert result.exit_code == 1, result.output
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("camscope: error:")]
    assert len(errors) == 1 and "run.json" in errors[0] and "No space left" in errors[0]
    assert "Traceback" not in result.output
    assert (tmp_path / "out" / "predictions.csv").is_file()  # the rest survives
    assert json.loads((tmp_path / "out" / "run.json").read_text())["state"] == "running"


def test_predictions_unwritable_run_json_still_written(images, tmp_path, monkeypatch):
    def refuse(path, *_a, **_k):
        raise IsADirectoryError(errno.EISDIR, "Is a directory", str(path))

    monkeypatch.setattr(finalize_module, "write_csv", refuse)
    result = _run(images, tmp_path / "out")
    assert result.exit_code == 1
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("camscope: error:")]
    assert len(errors) == 1 and "predictions.csv" in errors[0], result.stderr
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["state"] == "complete" and "predictions.csv" in run["problems"][0]


def test_run_json_that_is_a_folder_is_refused_untouched(images, tmp_path):
    out = tmp_path / "out"
    (out / "run.json").mkdir(parents=True)
    result = _run(images, out)
    assert result.exit_code == 2
    assert "run.json" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in out.iterdir()) == ["run.json"]
