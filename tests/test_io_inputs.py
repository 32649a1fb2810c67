"""Reliability of input scanning, names camscope makes and file-name escaping (issue 10)."""

from __future__ import annotations

import csv
import errno
import json
import os
import random
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, features

from camscope.io import (
    IMAGE_EXTENSIONS,
    NAME_MAX,
    TEMP_PREFIX,
    InputError,
    atomic_open,
    collect_inputs,
    escape_name,
    image_extensions,
    is_run_folder,
    load_image,
    save_png,
    unescape_name,
    unique_names,
    write_csv,
    write_json,
)
from camscope.io import inputs as inputs_module


def _png(path: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)).save(path, format="PNG")
    return path


def _one_line(err: InputError, path: Path | str) -> None:
    text = str(err)
    assert "\n" not in text and text.startswith(f"{escape_name(path)}: ") and err.cause
    text.encode("utf-8")  # printable whatever bytes the name holds


def _errors_for(errors: list[InputError], path: Path) -> list[InputError]:
    return [e for e in errors if e.path == os.fspath(path)]


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


# ----------------------------------------------------------------------------- formats


def test_extensions_follow_what_pillow_decodes() -> None:
    exts = image_extensions()
    assert exts == IMAGE_EXTENSIONS
    assert {".jpg", ".jpeg", ".png", ".gif", ".tif", ".bmp", ".qoi", ".ppm"} <= exts
    if features.check("webp"):
        assert ".webp" in exts
    if features.check("avif"):
        assert ".avif" in exts
    if features.check("jpg_2000"):
        assert ".jp2" in exts
    # save-only, identify-only and handler-less stub formats are never searched for
    assert not {".pdf", ".mpg", ".h5", ".grib", ".bufr"} & exts
    assert all(e == e.lower() and e.startswith(".") for e in exts)


def test_every_format_pillow_writes_is_found_and_decoded(tmp_path: Path) -> None:
    """A file that decodes when named is also found in a folder (issue 10: AVIF was not)."""
    Image.init()
    image = Image.fromarray(np.full((8, 8, 3), 120, np.uint8))
    written = []
    for ext, fmt in sorted(Image.registered_extensions().items()):
        path = tmp_path / "imgs" / f"x{ext}"
        path.parent.mkdir(exist_ok=True)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # IM, deprecated in Pillow
                image.save(path, format=fmt)
            load_image(path)
        except Exception:  # noqa: BLE001, S112 - Pillow cannot write or read it back: not ours
            path.unlink(missing_ok=True)
            continue
        written.append(path)
    assert len(written) >= 15  # jpg, png, gif, tiff, bmp, webp, qoi, ppm, ico, tga, ...
    files, errors = collect_inputs([tmp_path / "imgs"])
    assert errors == []
    assert sorted(files) == sorted(written)


# ----------------------------------------------------------------------------- unreadable


def test_unreadable_subfolder_is_reported_chmod(tmp_path: Path) -> None:
    if _is_root():
        pytest.skip("running as root: permissions are ignored (see the simulated test)")
    _png(tmp_path / "imgs" / "a.png")
    locked = tmp_path / "imgs" / "locked"
    _png(locked / "b.png")
    locked.chmod(0)
    try:
        files, errors = collect_inputs([tmp_path / "imgs"])
    finally:
        locked.chmod(0o755)
    assert files == [tmp_path / "imgs" / "a.png"]
    (err,) = errors
    assert err.path == os.fspath(locked) and "permission denied" in err.cause
    _one_line(err, locked)


def test_unreadable_subfolder_is_reported_simulated(tmp_path: Path, monkeypatch) -> None:
    _png(tmp_path / "imgs" / "a.png")
    locked = tmp_path / "imgs" / "locked"
    _png(locked / "b.png")
    real = os.scandir

    def scandir(path):
        if Path(path) == locked:
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real(path)

    monkeypatch.setattr(inputs_module.os, "scandir", scandir)
    files, errors = collect_inputs([tmp_path / "imgs"])
    assert files == [tmp_path / "imgs" / "a.png"]
    assert [e.path for e in errors] == [os.fspath(locked)]
    assert errors[0].cause.startswith("permission denied")


def test_unreadable_top_folder_has_no_images_line(tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "imgs"
    _png(folder / "a.png")

    def scandir(path):
        raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))

    monkeypatch.setattr(inputs_module.os, "scandir", scandir)
    files, errors = collect_inputs([folder])
    assert files == [] and len(errors) == 1 and "permission denied" in errors[0].cause


def _deep_tree(root: Path, levels: int) -> Path:
    """A chain of 200-byte folder names, made through directory fds (beyond PATH_MAX)."""
    name = "d" * 200
    root.mkdir()
    fd = os.open(root, os.O_RDONLY)
    try:
        for _ in range(levels):
            os.mkdir(name, dir_fd=fd)
            new = os.open(name, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = new
        img = os.open("deep.png", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(img, b"\x89PNG")
        os.close(img)
    finally:
        os.close(fd)
    return root


def test_path_beyond_the_os_limit_is_reported(tmp_path: Path) -> None:
    path_max = os.pathconf("/", "PC_PATH_MAX")
    levels = path_max // 201 + 2
    root = _deep_tree(tmp_path / "deep", levels)
    _png(root / "top.png")
    files, errors = collect_inputs([root])
    assert files == [root / "top.png"]
    assert len(errors) == 1
    (err,) = errors
    assert "longer than the system allows" in err.cause
    assert len(os.fsencode(err.path)) >= path_max - 201  # names the deepest reachable path
    _one_line(err, err.path)


def test_overlong_name_given_explicitly(tmp_path: Path) -> None:
    path = tmp_path / ("n" * (NAME_MAX + 1) + ".png")
    files, errors = collect_inputs([path])
    assert files == [] and len(errors) == 1
    assert "longer than the system allows" in errors[0].cause


def test_broken_links_and_loops_are_reported(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    _png(root / "sub" / "a.png")
    _png(tmp_path / "elsewhere" / "linked.png")
    (root / "gone.png").symlink_to(tmp_path / "missing.png")
    (root / "notes.txt").symlink_to(tmp_path / "missing.txt")  # not an image name: ignored
    (root / "self.png").symlink_to(root / "self.png")
    (root / "sub" / "up").symlink_to(root)  # loop
    (root / "other").symlink_to(tmp_path / "elsewhere")  # symlinked folder: followed
    files, errors = collect_inputs([root])
    assert files == [root / "other" / "linked.png", root / "sub" / "a.png"]
    causes = {Path(e.path).name: e.cause for e in errors}
    assert set(causes) == {"gone.png", "self.png", "up"}
    assert causes["gone.png"].startswith("broken symbolic link")
    assert "loop" in causes["self.png"] and "loop" in causes["up"]
    for err in errors:
        _one_line(err, err.path)


def test_broken_link_given_explicitly(tmp_path: Path) -> None:
    link = tmp_path / "x.png"
    link.symlink_to(tmp_path / "nothing.png")
    files, errors = collect_inputs([link])
    assert files == [] and errors[0].cause.startswith("broken symbolic link")


# ----------------------------------------------------------------------------- exclusion


def test_output_folder_inside_input_is_not_scanned(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    _png(root / "a.png")
    _png(root / "out" / "gradcam" / "a.png")  # the run's own output
    files, errors = collect_inputs([root], exclude=[root / "out"])
    assert files == [root / "a.png"] and errors == []
    files, errors = collect_inputs([str(root / "**" / "*.png")], exclude=[root / "out"])
    assert files == [root / "a.png"] and errors == []
    files, errors = collect_inputs([root / "out"], exclude=[root / "out"])
    assert files == [] and "output folder" in errors[0].cause
    # an exclusion that does not exist yet changes nothing
    files, _ = collect_inputs([root], exclude=[tmp_path / "new-out"])
    assert len(files) == 2


def test_run_folders_are_not_scanned(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    _png(root / "a.png")
    run = root / "old-run"
    _png(run / "gradcam" / "a.png")
    (run / "run.json").write_text(json.dumps({"camscope_version": "0.2", "state": "complete"}))
    other = root / "not-a-run"
    _png(other / "b.png")
    (other / "run.json").write_text(json.dumps({"something": "else"}))
    assert is_run_folder(run) and not is_run_folder(other) and not is_run_folder(root)
    files, errors = collect_inputs([root])
    assert files == [root / "a.png", other / "b.png"] and errors == []
    files, _ = collect_inputs([str(root / "**" / "*.png")])
    assert files == [root / "a.png", other / "b.png"]


# ----------------------------------------------------------------------------- names


def test_non_utf8_names_are_found_decoded_and_written(tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    raw = os.fsencode(folder) + b"/caf\xe9-\xff.png"
    _png(Path(os.fsdecode(raw)))
    files, errors = collect_inputs([folder])
    assert errors == [] and [os.fsencode(f) for f in files] == [raw]
    assert load_image(files[0]).size == (5, 6)
    err = InputError(files[0], "some cause")
    assert str(err).endswith("caf\\xe9-\\xff.png: some cause")
    write_csv(tmp_path / "t.csv", ["file", "raw"], [[files[0], str(files[0])]])
    write_json(tmp_path / "t.json", {"file": files[0], "text": str(files[0]), str(files[0]): 1})
    with open(tmp_path / "t.csv", encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))
    meta = json.loads((tmp_path / "t.json").read_text(encoding="utf-8"))
    for text in [rows[1][0], rows[1][1], meta["file"], meta["text"]]:
        assert os.fsencode(unescape_name(text)) == raw
    assert os.fsencode(unescape_name(next(k for k in meta if k.endswith(".png")))) == raw


def test_escape_name_round_trips_everything() -> None:
    alphabet = ["\\", "x", "X", "u", "d", "D", "8", "9", "f", "a", "0", "é", "\n", "/"]
    alphabet += [chr(0xDC80), chr(0xDCFF), chr(0xDCE9), chr(0xD800), chr(0xDFFF)]
    rng = random.Random(0)
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 12)))
        escaped = escape_name(text)
        escaped.encode("utf-8")
        assert unescape_name(escaped) == text, (text, escaped)
        if not any(0xD800 <= ord(c) <= 0xDFFF for c in text) and "\\" not in text:
            assert escaped == text
    assert escape_name(r"C:\photos\x.png") == r"C:\photos\x.png"  # Windows paths unchanged
    assert escape_name(b"\xe9") == r"\xe9" and escape_name(Path("a") / "b") == "a/b"


def test_atomic_write_of_a_250_byte_name(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / ("n" * 246 + ".png")
    assert len(os.fsencode(target.name)) == 250
    temps = []
    real = os.replace

    def spy(src, dst):
        temps.append(Path(src).name)
        return real(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    save_png(target, np.zeros((2, 2, 3), np.uint8))
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]
    (temp,) = temps
    assert temp.startswith(TEMP_PREFIX) and temp.endswith(".tmp") and len(temp) == 16
    with atomic_open(tmp_path / ("m" * NAME_MAX), "w") as fh:  # the longest legal name
        fh.write("ok")


def test_unique_names_fit_the_name_limit(tmp_path: Path) -> None:
    long_a = "a" * 300
    paths = [
        Path(f"x/{long_a}1.jpg"),
        Path(f"x/{long_a}2.jpg"),  # differs only after the cut
        Path(f"y/{long_a}1.jpg"),  # collides with the first: parent prefix, then cut
        Path(f"x/{long_a.upper()}1.png"),  # same ignoring case
        Path("x/short.jpg"),
    ] + [Path(f"d{i}/{'b' * 260}.jpg") for i in range(12)]
    names = unique_names(paths)
    assert names == unique_names(paths)  # deterministic
    assert len({n.lower() for n in names}) == len(paths)
    assert all(len(n.encode()) <= NAME_MAX - 15 for n in names)
    assert names[4] == "short"
    for name in names:  # each is a writable file name with an extension
        (tmp_path / f"{name}.png").write_bytes(b"")
        (tmp_path / f"{name}.overlay.npy").write_bytes(b"")
    small = unique_names(paths, max_length=40)
    assert all(len(n) <= 40 for n in small) and len({n.lower() for n in small}) == len(paths)
    with pytest.raises(ValueError):
        unique_names(paths, max_length=3)


@pytest.mark.parametrize("where", ["open", "replace"])
def test_write_errors_name_the_destination(tmp_path: Path, monkeypatch, where: str) -> None:
    target = tmp_path / "run.json"
    real_open = os.open

    def full_open(path, *args, **kwargs):
        if Path(path).name.startswith(TEMP_PREFIX):
            raise OSError(errno.ENOSPC, "No space left on device", os.fspath(path))
        return real_open(path, *args, **kwargs)

    def full_replace(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device", os.fspath(src), os.fspath(dst))

    monkeypatch.setattr(
        os, "open" if where == "open" else "replace", full_open if where == "open" else full_replace
    )
    with pytest.raises(OSError) as info:
        write_json(target, {"a": 1})
    assert info.value.errno == errno.ENOSPC and info.value.filename == os.fspath(target)
    assert str(info.value) == f"[Errno 28] No space left on device: '{target}'"
    monkeypatch.setattr(os, "open", real_open)
    assert list(tmp_path.iterdir()) == []  # nothing left behind
