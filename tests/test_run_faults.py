"""Faults on a real subprocess: SIGKILL mid-run, Ctrl-C (SIGINT), then resume."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from run_helpers import MODEL, env, make_images

from camscope.io import TEMP_PREFIX
from camscope.run import results

ARGS = ["-m", "gradcam,ablationcam", "-b", "2", *MODEL]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Inputs and the table of the same command run without interruption."""
    root = tmp_path_factory.mktemp("faults")
    make_images(root / "in", 14, seed=3)
    done = _camscope(root, root / "ref")
    assert done.returncode == 0, done.stderr
    return root, _table(root / "ref")


def _camscope(root: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "camscope.cli", "run", str(root / "in"), "-o", str(out), *ARGS]
    return subprocess.run([*cmd, *extra], env=env(), capture_output=True, text=True, timeout=300)


def _table(out: Path) -> dict:
    rows = results.read_table([out]).drop_columns(["run_dir"]).to_pylist()
    return {(r["name"], r["method"]): r for r in rows if r["status"] == "ok"}


def _start(root: Path, out: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "camscope.cli", "run", str(root / "in"), "-o", str(out), *ARGS]
    cmd += extra
    return subprocess.Popen(
        cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _wait_for_parts(proc: subprocess.Popen, out: Path, n: int) -> None:
    deadline = time.monotonic() + 180
    while len(results.part_files(out)) < n:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no progress"
        time.sleep(0.05)


def _same_as_reference(out: Path, want: dict) -> None:
    got = _table(out)
    assert set(got) == set(want)
    for ident, row in want.items():
        np.testing.assert_allclose(got[ident]["raw"], row["raw"], rtol=1e-5, atol=1e-7)
        saved = np.load(results.map_path(out, ident[1], ident[0]))
        ref = np.load(results.map_path(out.parent / "ref", ident[1], ident[0]))
        np.testing.assert_allclose(saved, ref, atol=1e-6)
        assert got[ident]["top5_index"] == row["top5_index"]


def test_sigkill_loses_only_images_in_flight_then_resume(reference):
    root, want = reference
    out = root / "killed"
    proc = _start(root, out)
    _wait_for_parts(proc, out, 3)
    proc.kill()
    proc.communicate()
    assert json.loads((out / "run.json").read_text())["state"] == "running"
    done = _table(out)
    assert 3 * 2 <= len(done) < 28  # killed mid-run, at least three images written
    for part in results.part_files(out):  # every visible file is complete
        assert pq.read_table(part).num_rows > 0
    for (name, method), _row in done.items():
        assert np.load(results.map_path(out, method, name)).shape == (224, 224)
    again = _camscope(root, out)
    assert again.returncode == 0, again.stderr
    assert "of 14 done" in again.stderr  # "resuming: N of 14 done"
    assert json.loads((out / "run.json").read_text())["state"] == "complete"
    assert not list(out.rglob(f"{TEMP_PREFIX}*"))
    _same_as_reference(out, want)


def test_sigint_finishes_batch_records_interrupted_exit_130(reference):
    root, want = reference
    out = root / "interrupted"
    proc = _start(root, out, "--quiet")
    _wait_for_parts(proc, out, 2)
    proc.send_signal(signal.SIGINT)
    _stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "interrupted" in lines[0] and "Traceback" not in stderr, stderr
    run = json.loads((out / "run.json").read_text())
    assert run["state"] == "interrupted"
    n = len(_table(out)) // 2
    assert 2 <= n < 14
    again = _camscope(root, out)
    assert again.returncode == 0, again.stderr
    _same_as_reference(out, want)
