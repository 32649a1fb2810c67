"""Run-folder faults: another input set into an existing run; special files named like images."""

from __future__ import annotations

import csv
import os
import shutil
import socket
from pathlib import Path

import pytest
from click.testing import CliRunner
from run_helpers import MODEL, make_images

from camscope.cli import main
from camscope.io import collect_inputs, runfolder

pytestmark = pytest.mark.usefixtures("single_thread")

needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")


def _run(inputs: Path, out: Path, *extra: str):
    args = ["run", str(inputs), "-o", str(out), *MODEL, "-m", "gradcam", "--save-maps", "npy"]
    return CliRunner().invoke(main, [*args, *extra])


def _predicted(out: Path) -> dict[str, str]:
    with open(out / runfolder.PREDICTIONS_CSV, newline="") as fh:
        return {row["name"]: row["file"] for row in csv.DictReader(fh)}


def _rename(folder: Path, prefix: str) -> None:
    for path in sorted(folder.iterdir()):
        path.rename(folder / f"{prefix}{path.name}")


def test_other_inputs_are_added_and_said(tmp_path):
    make_images(tmp_path / "a", 2, seed=1)
    make_images(tmp_path / "b", 2, seed=2)
    _rename(tmp_path / "b", "b_")
    out = tmp_path / "out"
    assert _run(tmp_path / "a", out).exit_code == 0
    result = _run(tmp_path / "b", out)
    assert result.exit_code == 0, result.output
    lines = [ln for ln in result.stderr.splitlines() if "adding to the run" in ln]
    assert len(lines) == 1 and "2 image(s) that are not among these inputs" in lines[0]
    files = _predicted(out)
    want = {p.stem: str(p) for d in ("a", "b") for p in sorted((tmp_path / d).iterdir())}
    assert files == want  # the union, each under its own path
    assert set(os.listdir(out / "gradcam")) == {f"{n}.npy" for n in want}
    run = runfolder.read_run(out)
    assert [s["inputs"] for s in run["sessions"]] == [[str(tmp_path / d)] for d in ("a", "b")]


def test_same_images_from_another_folder_are_said(tmp_path):
    make_images(tmp_path / "a", 2, seed=1)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    out = tmp_path / "out"
    assert _run(tmp_path / "a", out).exit_code == 0
    result = _run(tmp_path / "b", out)
    assert result.exit_code == 0, result.output
    assert "2 input(s) are already in the run as the same image" in result.stderr
    assert f"{tmp_path / 'b' / 'img00.png'} = {tmp_path / 'a' / 'img00.png'}" in result.stderr
    assert "adding to the run" not in result.stderr  # the folder holds nothing else
    # a plain resume of the same inputs says nothing of the kind
    again = _run(tmp_path / "a", out)
    assert again.exit_code == 0 and "already in the run" not in again.stderr


def test_a_name_taken_by_another_image_is_a_failed_input(tmp_path):
    make_images(tmp_path / "a", 2, seed=1)
    make_images(tmp_path / "b", 2, seed=2)  # same names img00, img01, other pictures
    out = tmp_path / "out"
    assert _run(tmp_path / "a", out).exit_code == 0
    before = (out / "gradcam" / "img00.npy").read_bytes()
    result = _run(tmp_path / "b", out)
    assert result.exit_code == 1, result.output
    taken = [ln for ln in result.stderr.splitlines() if "is taken in the run" in ln]
    assert len(taken) == 2, result.stderr
    assert str(tmp_path / "a" / "img00.png") in taken[0]
    assert (out / "gradcam" / "img00.npy").read_bytes() == before  # A's map kept
    assert _predicted(out) == {p.stem: str(p) for p in sorted((tmp_path / "a").iterdir())}


def _specials(folder: Path) -> list[Path]:
    made = []
    if hasattr(os, "mkfifo"):
        os.mkfifo(folder / "pipe.jpg")
        made.append(folder / "pipe.jpg")
    if hasattr(socket, "AF_UNIX") and len(os.fsencode(folder / "sock.png")) < 100:
        with socket.socket(socket.AF_UNIX) as s:
            s.bind(os.fspath(folder / "sock.png"))
        made.append(folder / "sock.png")
    return made


def test_special_files_named_like_images_are_one_line_each(tmp_path):
    folder = tmp_path / "in"
    make_images(folder, 1)
    specials = _specials(folder)
    if not specials:
        pytest.skip("no FIFOs or sockets on this system")
    (folder / "link.jpg").symlink_to(specials[0])
    files, errors = collect_inputs([folder])
    assert files == [folder / "img00.png"]
    got = {Path(e.path).name: e.cause for e in errors}
    assert set(got) == {p.name for p in specials} | {"link.jpg"}
    assert all(
        c.startswith("not a regular file (a ") and c.endswith("; skipped") for c in got.values()
    )
    # given by name or through a glob, the same (and never opened: a FIFO would block)
    files, errors = collect_inputs([specials[0], str(folder / "*.jpg")])
    assert files == [] and len(errors) == 3, errors


@needs_fifo
def test_fifo_in_an_input_folder_fails_that_input(tmp_path):
    folder = tmp_path / "in"
    make_images(folder, 2)
    os.mkfifo(folder / "pipe.jpg")
    out = tmp_path / "out"
    result = _run(folder, out)
    assert result.exit_code == 1, result.output
    lines = [ln for ln in result.stderr.splitlines() if "pipe.jpg" in ln]
    assert lines == [
        f"camscope: error: {folder / 'pipe.jpg'}: not a regular file (a named pipe); skipped"
    ]
    assert set(_predicted(out)) == {"img00", "img01"}
    table = runfolder.read_table([out], columns=["file", "error"])
    failed = [r for r in table.to_pylist() if r["status"] == "failed"]
    assert [Path(r["file"]).name for r in failed] == ["pipe.jpg"]


def test_two_sessions_of_one_process_never_share_a_part_file():
    from camscope.run.writer import session_prefix

    assert len({session_prefix() for _ in range(20)}) == 20
