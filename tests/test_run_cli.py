"""CLI plumbing of the run: one-line warnings, stage lines, shards merged by `camscope report`."""

from __future__ import annotations

import logging
import warnings

import pytest
from click.testing import CliRunner
from run_helpers import MODEL, make_images

from camscope.cli import _reporting, main
from camscope.run import RunConfig, plan, results


def test_warnings_and_log_records_become_one_line(capsys):
    with _reporting(quiet=False):
        warnings.warn("corrupt EXIF data\nsecond line", UserWarning, stacklevel=1)
        logging.getLogger("camscope.io").warning("substituted %s", "eager")
        logging.getLogger("camscope").info("explain: 3 image(s) (1.0 s)")
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "camscope: warning: corrupt EXIF data second line (UserWarning)",
        "camscope: warning: substituted eager",
        "camscope: explain: 3 image(s) (1.0 s)",
    ]
    with _reporting(quiet=True):
        logging.getLogger("camscope").info("hidden")
        logging.getLogger("camscope").error("shown")
    assert capsys.readouterr().err.splitlines() == ["camscope: error: shown"]


def test_shards_then_one_report(tmp_path):
    make_images(tmp_path / "in", 6, seed=5)
    runner = CliRunner()
    for i in range(2):
        result = runner.invoke(
            main,
            [
                "run",
                str(tmp_path / "in"),
                "-o",
                str(tmp_path / f"s{i}"),
                *MODEL,
                "-m",
                "gradcam",
                "--metrics",
                "--steps",
                "3",
                "--sanity-images",
                "0",
                "--shard",
                f"{i}/2",
            ],
        )
        assert result.exit_code == 0, result.output
        stages = [
            ln.split(": ", 1)[1].split(" (")[0].split(":")[0] for ln in result.stderr.splitlines()
        ]
        assert {"collect", "explain", "write report.html"} <= set(stages), result.stderr
    merged = tmp_path / "merged"
    result = runner.invoke(
        main, ["report", str(tmp_path / "s0"), str(tmp_path / "s1"), "-o", str(merged)]
    )
    assert result.exit_code == 0, result.output
    assert (merged / "report.html").is_file() and (merged / "summary.csv").is_file()
    table = results.read_table([tmp_path / "s0", tmp_path / "s1"], columns=["deletion_auc"])
    everything = plan(RunConfig(inputs=(str(tmp_path / "in"),), out_dir=str(tmp_path / "x")))
    assert sorted(table.column("name").to_pylist()) == sorted(i.name for i in everything.items)
    summary = (merged / "summary.csv").read_text()
    assert "6" in summary  # n over both shards


def test_report_refuses_a_folder_that_is_not_a_run(tmp_path):
    (tmp_path / "x").mkdir()
    result = CliRunner().invoke(main, ["report", str(tmp_path / "x")])
    assert result.exit_code == 1
    assert (
        result.stderr.strip() == f"camscope: error: {tmp_path / 'x' / 'run.json'}: missing "
        "(not a camscope run folder?)"
    )


@pytest.mark.parametrize("bad", ["3", "1/0", "a/b"])
def test_shard_syntax(tmp_path, bad):
    result = CliRunner().invoke(main, ["run", str(tmp_path), "--shard", bad, *MODEL])
    assert result.exit_code == 2


def test_ctrl_c_outside_the_run_loop_is_130_not_aborted(monkeypatch):
    import camscope.models

    def interrupted(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr(camscope.models, "load_model", interrupted)
    result = CliRunner().invoke(main, ["layers", "--model", "resnet18"])
    assert result.exit_code == 130 and result.stderr == "camscope: interrupted\n"
