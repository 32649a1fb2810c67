"""Input collection: expand files, folders and globs into image paths; output base names.

Every bad input is reported as a one-line :class:`InputError` (``"{path}: {cause}"``) instead of
an OS traceback.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Sequence
from pathlib import Path

__all__ = ["IMAGE_EXTENSIONS", "InputError", "collect_inputs", "unique_names"]

#: File extensions (lower case, with the dot) picked up when a folder or glob is searched.
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {
        ".jpg",
        ".jpeg",
        ".jfif",
        ".png",
        ".bmp",
        ".gif",
        ".tif",
        ".tiff",
        ".webp",
        ".ppm",
        ".pgm",
        ".pbm",
    }
)

_GLOB_CHARS = frozenset("*?[")
_MAX_CAUSE_DETAIL = 120
_NAME_RE = re.compile(r"[^A-Za-z0-9._-]")


class InputError(Exception):
    """A problem with one user input (a path, a glob, an undecodable image).

    ``str(err)`` is always exactly one line, ``"{path}: {cause}"``, fit to be printed as is.

    Attributes:
        path: the input as the user gave it (or the file that failed).
        cause: short human-readable reason, e.g. ``"empty file (0 bytes)"``.
    """

    def __init__(self, path: str | os.PathLike[str], cause: str) -> None:
        self.path = os.fspath(path)
        self.cause = _one_line(cause)
        super().__init__(self.path, self.cause)

    def __str__(self) -> str:
        shown = self.path.replace("\r", "\\r").replace("\n", "\\n")  # keep it one line
        return f"{shown}: {self.cause}"


def _one_line(text: str) -> str:
    """Collapse *text* to a single line (newlines and runs of whitespace become one space)."""
    return " ".join(str(text).split())


def _short(text: object) -> str:
    """One-line, length-capped rendering of an exception message for use inside a cause."""
    msg = _one_line(str(text))
    if len(msg) > _MAX_CAUSE_DETAIL:
        msg = msg[: _MAX_CAUSE_DETAIL - 3] + "..."
    return msg


# --------------------------------------------------------------------------------------------
# Input collection
# --------------------------------------------------------------------------------------------


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _has_image_suffix(path: str | Path) -> bool:
    return os.path.splitext(str(path))[1].lower() in IMAGE_EXTENSIONS


def _scan_folder(folder: Path) -> list[Path]:
    """Image files under *folder*, recursively, hidden files/folders skipped, sorted.

    Symlinked folders are not followed (avoids cycles); symlinked files are kept.
    """
    found: list[tuple[tuple[str, ...], Path]] = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not _is_hidden(d)]
        root_path = Path(root)
        rel = root_path.relative_to(folder).parts
        for name in files:
            if not _is_hidden(name) and _has_image_suffix(name):
                found.append(((*rel, name), root_path / name))
    found.sort(key=lambda item: item[0])
    return [path for _, path in found]


def _looks_like_glob(text: str) -> bool:
    return any(ch in _GLOB_CHARS for ch in text)


def collect_inputs(inputs: Sequence[str | Path]) -> tuple[list[Path], list[InputError]]:
    """Expand user inputs into a list of image files.

    Each input may be:

    * a file: taken whatever its extension (a non-image file fails later, in :func:`load_image`);
    * a folder: searched recursively for files whose extension (case-insensitive) is in
      :data:`IMAGE_EXTENSIONS`; hidden files and folders (name starting with ``.``) are skipped;
      results are sorted by path. A folder without images is an error;
    * a glob pattern (``*``, ``?``, ``[...]``; ``**`` matches any depth): matching files with an
      image extension are taken (sorted); matched folders are ignored. A pattern that matches
      nothing, or matches no image file, is an error.

    A path that does not exist (and is not a glob) is an error. Duplicates (same resolved path)
    are removed, keeping the first occurrence; otherwise the input order is preserved.

    Returns:
        ``(files, errors)``: the files to process and one :class:`InputError` per bad input.
    """
    files: list[Path] = []
    errors: list[InputError] = []
    seen: set[str] = set()

    def add(path: Path) -> None:
        try:
            key = str(path.resolve())
        except (OSError, RuntimeError):
            key = os.path.abspath(path)
        if key not in seen:
            seen.add(key)
            files.append(path)

    for item in inputs:
        text = os.fspath(item)
        path = Path(text)
        if text and os.path.lexists(text):
            if path.is_dir():
                found = _scan_folder(path)
                if not found:
                    errors.append(InputError(text, "folder contains no images"))
                for p in found:
                    add(p)
            elif path.exists():
                add(path)
            else:
                errors.append(InputError(text, "broken symbolic link"))
        elif _looks_like_glob(text):
            matches = sorted(glob.glob(text, recursive=True))
            if not matches:
                errors.append(InputError(text, "no files match this pattern"))
                continue
            images = [m for m in matches if _has_image_suffix(m) and os.path.isfile(m)]
            if not images:
                errors.append(InputError(text, "pattern matches no image files"))
            for m in images:
                add(Path(m))
        else:
            errors.append(InputError(text or "''", "no such file or directory"))
    return files, errors


# --------------------------------------------------------------------------------------------
# Output names
# --------------------------------------------------------------------------------------------


def _sanitise(name: str) -> str:
    """Keep ``[A-Za-z0-9._-]``, replace anything else with ``_``; no leading dots."""
    clean = _NAME_RE.sub("_", name).lstrip(".")
    return clean or "image"


def unique_names(paths: Sequence[Path]) -> list[str]:
    """Output base names for *paths*: sanitised file stems, unique ignoring case.

    Rules, applied deterministically:

    1. name = file stem with every character outside ``[A-Za-z0-9._-]`` replaced by ``_``
       (leading dots dropped, so outputs are never hidden files; empty -> ``"image"``);
    2. inputs whose names collide (case-insensitively) get as few parent folder names
       prefixed as separate them best (``a/cat.jpg``, ``b/cat.jpg`` -> ``a_cat``, ``b_cat``;
       ``a/x/cat.jpg``, ``b/x/cat.jpg`` -> ``a_x_cat``, ``b_x_cat``); files in the same folder
       get no prefix. Parents come from the resolved path;
    3. names still equal get ``-2``, ``-3``... appended in input order (the first keeps its
       name), skipping any suffix that is already taken.
    """
    paths = [Path(p) for p in paths]
    bases = [_sanitise(p.stem) for p in paths]
    parents: list[list[str]] = []
    for p in paths:
        try:
            parent = p.resolve().parent
        except (OSError, RuntimeError):
            parent = Path(os.path.abspath(p)).parent
        parts = [part for part in parent.parts if part != parent.anchor]
        parents.append([_sanitise(part) for part in parts])

    def named(i: int, level: int) -> str:
        return "_".join([*parents[i][len(parents[i]) - min(level, len(parents[i])) :], bases[i]])

    names = list(bases)
    depth = [0] * len(paths)
    # Each pass gives every colliding group the fewest extra parent levels that separate its
    # members best; stops when no group can be improved (bounded: depths only grow).
    changed = True
    while changed:
        changed = False
        groups: dict[str, list[int]] = {}
        for i, name in enumerate(names):
            groups.setdefault(name.lower(), []).append(i)
        for members in groups.values():
            if len(members) < 2:
                continue
            room = max(len(parents[i]) - depth[i] for i in members)
            best_extra, best_distinct = 0, 1
            for extra in range(1, room + 1):
                distinct = len({named(i, depth[i] + extra).lower() for i in members})
                if distinct > best_distinct:
                    best_extra, best_distinct = extra, distinct
                if distinct == len(members):
                    break
            if best_extra:
                for i in members:
                    depth[i] += best_extra
                    names[i] = named(i, depth[i])
                changed = True

    taken_later = {n.lower() for n in names}
    used: set[str] = set()
    result: list[str] = []
    for name in names:
        candidate = name
        if candidate.lower() in used:
            k = 2
            while f"{name}-{k}".lower() in used or f"{name}-{k}".lower() in taken_later:
                k += 1
            candidate = f"{name}-{k}"
        used.add(candidate.lower())
        result.append(candidate)
    return result
