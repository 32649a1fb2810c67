"""The run-folder schema (camscope/run/results.py): de-duplication, compaction, validation."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from camscope.run import results

METHODS = ["gradcam", "scorecam"]


def _row(name: str, method: str | None, status: str = "ok", auc: float = 0.5) -> dict:
    return {
        "key": f"k-{name}",
        "name": name,
        "file": f"/x/{name}.png",
        "status": status,
        "method": method,
        "settings_hash": "h",
        "deletion_auc": auc if status == "ok" else None,
        "raw": [0.0, 1.0],
        "raw_h": 1,
        "raw_w": 2,
    }


def _folder(tmp_path: Path) -> Path:
    (tmp_path / "run.json").write_text(json.dumps({"settings": {"methods": METHODS}}))
    return tmp_path


def _write(run_dir: Path, seq: int, rows: list[dict]) -> None:
    path = results.write_part(run_dir, "s", seq, rows, METHODS)
    stamp = time.time() + seq  # distinct, increasing modification times
    os.utime(path, (stamp, stamp))


def _view(table) -> dict:
    return {(r["name"], r["method"]): (r["status"], r["deletion_auc"]) for r in table.to_pylist()}


def test_last_part_wins_and_failed_rows_give_way(tmp_path):
    run_dir = _folder(tmp_path)
    _write(run_dir, 0, [_row("a", "gradcam", auc=0.1), _row("b", None, "failed")])
    _write(run_dir, 1, [_row("a", "gradcam", auc=0.2), _row("b", "gradcam", auc=0.3)])
    _write(run_dir, 2, [_row("c", None, "failed")])
    view = _view(results.read_table([run_dir]))
    assert view == {
        ("a", "gradcam"): ("ok", pytest.approx(0.2)),
        ("b", "gradcam"): ("ok", pytest.approx(0.3)),
        ("c", None): ("failed", None),
    }
    assert results.done_keys(run_dir, "h", ["gradcam"]) == {("k-a", "a"), ("k-b", "b")}
    assert results.done_keys(run_dir, "h", METHODS) == set()  # scorecam missing
    assert results.done_keys(run_dir, "other", ["gradcam"]) == set()


def _originals(run_dir: Path) -> None:
    for seq in range(5):
        _write(run_dir, seq, [_row(f"i{seq}", m, auc=seq / 10) for m in METHODS])
    _write(run_dir, 5, [_row("i0", "gradcam", auc=0.9)])


def test_compact_keeps_the_same_table_and_survives_a_kill(tmp_path):
    run_dir = _folder(tmp_path)
    _originals(run_dir)
    before = _view(results.read_table([run_dir]))
    parts = results.part_files(run_dir)
    (merged,) = results.compact(run_dir, min_parts=2)
    assert results.part_files(run_dir) == [merged]
    assert _view(results.read_table([run_dir])) == before
    # killed after writing the merged part, before deleting the others: same table
    _originals(run_dir)
    os.utime(merged, (time.time() + 100,) * 2)  # the merged part is the newest
    assert len(results.part_files(run_dir)) == 7
    assert _view(results.read_table([run_dir])) == before
    assert parts  # (the originals existed)
    several = results.compact(run_dir, min_parts=2, rows_per_part=4)
    assert len(several) == 3 and results.part_files(run_dir) == several
    assert _view(results.read_table([run_dir])) == before


def test_validate_names_each_damaged_file(tmp_path):
    assert results.validate(tmp_path) == [
        f"{tmp_path / 'run.json'}: missing (not a camscope run folder?)"
    ]
    (tmp_path / "run.json").write_text("{")
    (line,) = results.validate(tmp_path)
    assert line.startswith(f"{tmp_path / 'run.json'}: cannot read run state")
    run_dir = _folder(tmp_path)
    assert results.validate(run_dir) == [f"{run_dir / 'results'}: no results part files"]
    _write(run_dir, 0, [_row("a", "gradcam")])
    (run_dir / "results" / "part-s-000001.parquet").write_bytes(b"PAR1 garbage")
    (line,) = results.validate(run_dir)
    assert line.startswith(f"{run_dir / 'results' / 'part-s-000001.parquet'}: cannot read")
