"""Run folders written by the previous release stay readable (tests/fixtures/run-0.1.0)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from camscope.cli import main
from camscope.io import runfolder

pytestmark = pytest.mark.usefixtures("single_thread")

FIXTURE = Path(__file__).parent / "fixtures" / "run-0.1.0"
COMMAND = ["run", "in", "-o", "out", "--model", "test_resnet", "--random-weights"]
COMMAND += ["--methods", "gradcam,sscam,iscam", "--sscam-samples", "2", "--iscam-samples", "1"]
COMMAND += ["--save-maps", "none"]


@pytest.fixture
def old_run(tmp_path, monkeypatch) -> Path:
    """A copy of the fixture; the working folder is its root (its paths are relative)."""
    shutil.copytree(FIXTURE, tmp_path / "run")
    monkeypatch.chdir(tmp_path / "run")
    return tmp_path / "run" / "out"


def test_read(old_run):
    run = runfolder.read_run(old_run)
    assert run["camscope_version"] == "0.1.0" and run["state"] == "complete"
    table = runfolder.read_table([old_run])
    assert sorted(set(table.column("name").to_pylist())) == ["img00", "img01"]
    assert runfolder.validate(old_run) == []


def test_same_command_resumes_with_nothing_to_do(old_run):
    before = runfolder.read_run(old_run)["settings_hash"]
    result = CliRunner().invoke(main, COMMAND)
    assert result.exit_code == 0, result.output
    assert "0 image(s) explained" in result.stderr and "2 done before" in result.stderr
    assert runfolder.read_run(old_run)["settings_hash"] == before  # same settings, same hash


def test_evaluate_and_report(old_run):
    result = CliRunner().invoke(main, ["evaluate", "out", "--steps", "2", "--sanity-images", "0"])
    assert result.exit_code == 0, result.output
    assert runfolder.read_run(old_run)["settings"]["method_options"]["iscam"] == {"num_samples": 1}
    result = CliRunner().invoke(main, ["report", "out", "-q"])
    assert result.exit_code == 0, result.output
    assert (old_run / runfolder.REPORT_HTML).is_file()
