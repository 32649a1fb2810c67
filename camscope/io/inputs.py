"""Input collection: expand files, folders and globs into image paths; output base names.

Every bad input is reported as a one-line :class:`InputError` (``"{path}: {cause}"``) instead of
an OS traceback.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import json
import logging
import os
import re
import stat
import sys
from collections.abc import Sequence
from pathlib import Path

from camscope.errors import one_line
from camscope.io.files import escape_name
from camscope.io.runfolder import RUN_JSON

__all__ = [
    "IMAGE_EXTENSIONS",
    "NAME_MAX",
    "InputError",
    "collect_inputs",
    "image_extensions",
    "is_run_folder",
    "unique_names",
]

_log = logging.getLogger("camscope")

#: Longest file name, in bytes, that camscope writes: 255 on ext4, XFS, btrfs, ZFS and APFS
#: (NTFS counts 255 UTF-16 units). Output names from :func:`unique_names` stay within it.
NAME_MAX = 255

# Formats that Pillow can identify but never decode (size only), so searching for them would only
# produce failures: MPEG video headers.
_IDENTIFY_ONLY = frozenset({"MPEG"})
# Formats without an entry of their own in ``Image.OPEN`` that another plugin opens.
_OPENED_BY = {"MPO": "JPEG"}
# Optional plugins that add formats to Pillow when they are installed (module, registration).
_OPTIONAL_PLUGINS = (("pillow_heif", "register_heif_opener"), ("pillow_avif", None))


def _register_optional_plugins() -> None:
    """Register HEIF/AVIF plugins that are installed, so load and scan both know them."""
    import importlib

    for module_name, register in _OPTIONAL_PLUGINS:
        try:
            module = importlib.import_module(module_name)
            if register is not None:
                getattr(module, register)()
        except Exception:  # noqa: BLE001, S112 - optional: absent or broken means not offered
            continue


def _openable(fmt: str) -> bool:
    """Whether Pillow, as installed, can decode images of format *fmt* (not just identify them)."""
    from PIL import EpsImagePlugin, Image, ImageFile

    fmt = _OPENED_BY.get(fmt, fmt)
    if fmt not in Image.OPEN or fmt in _IDENTIFY_ONLY:
        return False
    factory = Image.OPEN[fmt][0]
    if isinstance(factory, type) and issubclass(factory, ImageFile.StubImageFile):
        module = sys.modules.get(factory.__module__)
        return getattr(module, "_handler", None) is not None
    if fmt == "EPS":
        return bool(EpsImagePlugin.has_ghostscript())
    return True


def image_extensions() -> frozenset[str]:
    """File extensions (lower case, with the dot) of every format Pillow can decode here.

    Derived from ``PIL.Image.registered_extensions()``, keeping the formats Pillow can open and
    decode as installed (AVIF, WebP, JPEG 2000 when built in; HEIF/AVIF when ``pillow_heif`` /
    ``pillow_avif`` is installed; EPS only with Ghostscript; not save-only formats such as PDF,
    stubs without a handler such as HDF5, or identify-only MPEG). So a file that
    :func:`~camscope.io.load_image` decodes when named is also found when its folder is searched.

    Example:
        >>> {".jpg", ".png", ".webp"} <= image_extensions()
        True
    """
    from PIL import Image

    _register_optional_plugins()
    Image.init()
    return frozenset(
        ext.lower() for ext, fmt in Image.registered_extensions().items() if _openable(fmt)
    )


#: The extensions searched in folders and globs when camscope was imported (see
#: :func:`image_extensions`; plugins registered later are picked up by ``collect_inputs``).
IMAGE_EXTENSIONS: frozenset[str] = image_extensions()

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
        self.cause = one_line(cause, None)
        super().__init__(self.path, self.cause)

    def __str__(self) -> str:
        # one line, and printable in UTF-8 whatever bytes the file name holds
        shown = escape_name(self.path).replace("\r", "\\r").replace("\n", "\\n")
        return f"{shown}: {self.cause}"


def _short(text: object) -> str:
    """An exception's message inside a cause: one line, at most 120 characters (`one_line`)."""
    return one_line(str(text), _MAX_CAUSE_DETAIL)


# --------------------------------------------------------------------------------------------
# Input collection
# --------------------------------------------------------------------------------------------


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _has_image_suffix(path: str | Path, extensions: frozenset[str]) -> bool:
    return os.path.splitext(str(path))[1].lower() in extensions


def _path_max() -> int:
    try:
        return int(os.pathconf("/", "PC_PATH_MAX"))
    except (OSError, ValueError, AttributeError):
        return 4096 if sys.platform != "win32" else 260


def _scan_cause(exc: OSError, *, folder: bool) -> str:
    """One-line cause for a path that scanning cannot read."""
    what = "folder" if folder else "file"
    if exc.errno == errno.ENAMETOOLONG:
        return (
            f"path is longer than the system allows ({_path_max()} bytes per path, "
            f"{NAME_MAX} per name); {what} skipped, move or rename it to a shorter path"
        )
    if exc.errno == errno.ELOOP:
        return "symbolic link loop (the link leads back to itself); skipped"
    if isinstance(exc, PermissionError) or exc.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied; {what} cannot be read, its images are skipped"
    if isinstance(exc, FileNotFoundError):
        return f"{what} vanished while it was searched"
    detail = (exc.strerror or str(exc)).lower()
    return f"cannot read this {what} ({_short(detail)}); skipped"


def is_run_folder(folder: str | os.PathLike[str]) -> bool:
    """Whether *folder* holds a camscope run (a ``run.json`` written by camscope).

    Such folders are never searched for input images: a run's maps and overlays are outputs, not
    inputs, even when the output folder lies inside an input folder.
    """
    path = os.path.join(os.fspath(folder), RUN_JSON)
    try:
        if not stat.S_ISREG(os.stat(path).st_mode) or os.path.getsize(path) > 1 << 24:
            return False
        with open(path, "rb") as fh:
            meta = json.load(fh)
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and ("camscope_version" in meta or "settings_hash" in meta)


_SPECIAL_KINDS = (
    (stat.S_ISFIFO, "a named pipe"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def _special_kind(path: str | os.PathLike[str]) -> str | None:
    """What *path* (links followed) is when it exists but is neither a file nor a folder.

    Such a file (a FIFO, socket or device named like an image) is never opened: reading a FIFO
    blocks until someone writes to it.
    """
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return None
    return next((kind for test, kind in _SPECIAL_KINDS if test(mode)), None)


def _special_cause(kind: str) -> str:
    return f"not a regular file ({kind}); skipped"


class _Scanner:
    """Recursive folder search that reports what it cannot read instead of dropping it."""

    def __init__(self, exclude: Sequence[str | os.PathLike[str]], extensions: frozenset[str]):
        self.extensions = extensions
        self.errors: list[InputError] = []
        self.exclude: set[tuple[int, int]] = set()
        for item in exclude:
            with contextlib.suppress(OSError, ValueError):
                st = os.stat(item)
                self.exclude.add((st.st_dev, st.st_ino))
        self.visited: set[tuple[int, int]] = set()
        self.path_max = _path_max()
        self.found: list[Path] = []

    def skipped(self, folder: Path, ident: tuple[int, int]) -> str | None:
        """Why *folder* is not searched (logged at info level), or ``None``."""
        if ident in self.exclude:
            return "the output folder of this run"
        if is_run_folder(folder):
            return "a camscope run folder (contains its run.json)"
        return None

    def entry(self, entry: os.DirEntry[str], path: Path, ancestors: frozenset) -> Path | None:
        """Classify one folder entry: returns a sub-folder to search, records files and errors."""
        try:
            if entry.is_dir():
                st = entry.stat()
                ident = (st.st_dev, st.st_ino)
                if ident in ancestors:
                    cause = "symbolic link loop (leads back to a folder above it); skipped"
                    self.errors.append(InputError(path, cause))
                    return None
                return path
            is_file = entry.is_file()
        except OSError as exc:
            self.errors.append(InputError(path, _scan_cause(exc, folder=False)))
            return None
        if not _has_image_suffix(entry.name, self.extensions):
            return None
        special = None if is_file else _special_kind(path)
        if special is not None:
            self.errors.append(InputError(path, _special_cause(special)))
        elif not is_file and entry.is_symlink():
            self.errors.append(InputError(path, "broken symbolic link (its target is missing)"))
        elif is_file and len(os.fsencode(path)) >= self.path_max:
            err = OSError(errno.ENAMETOOLONG, "File name too long")
            self.errors.append(InputError(path, _scan_cause(err, folder=False)))
        elif is_file:
            self.found.append(path)
        return None

    def scan(self, folder: Path) -> list[Path]:
        """Image files under *folder*, recursively, in sorted order (depth first)."""
        self.found = []
        self.visited = set()
        try:
            st = os.stat(folder)
        except OSError as exc:
            self.errors.append(InputError(folder, _scan_cause(exc, folder=True)))
            return []
        stack = [(folder, frozenset({(st.st_dev, st.st_ino)}))]
        while stack:
            current, ancestors = stack.pop()
            try:
                with os.scandir(current) as it:
                    entries = sorted(it, key=lambda e: e.name)
            except OSError as exc:
                self.errors.append(InputError(current, _scan_cause(exc, folder=True)))
                continue
            subfolders = []
            for entry in entries:
                if not _is_hidden(entry.name):
                    sub = self.entry(entry, current / entry.name, ancestors)
                    if sub is not None:
                        subfolders.append(sub)
            stack.extend(reversed(self.descend(subfolders, ancestors)))
        return self.found

    def descend(self, subfolders: list[Path], ancestors: frozenset) -> list[tuple[Path, frozenset]]:
        """The sub-folders still to search (excluded, run and already-seen folders dropped)."""
        todo = []
        for sub in subfolders:
            try:
                st = os.stat(sub)
            except OSError as exc:
                self.errors.append(InputError(sub, _scan_cause(exc, folder=True)))
                continue
            ident = (st.st_dev, st.st_ino)
            why = self.skipped(sub, ident)
            if why is not None:
                _log.info("%s: not searched for images: %s", InputError(sub, "").path, why)
            elif ident not in self.visited:  # reached twice through links: files already found
                self.visited.add(ident)
                todo.append((sub, ancestors | {ident}))
        return todo


def _looks_like_glob(text: str) -> bool:
    return any(ch in _GLOB_CHARS for ch in text)


def _glob_root(pattern: str) -> str:
    """The folder part of *pattern* before its first glob character (``"."`` when none)."""
    parts = Path(pattern).parts
    fixed = []
    for part in parts[:-1]:
        if _looks_like_glob(part):
            break
        fixed.append(part)
    return os.path.join(*fixed) if fixed else "."


def _in_skipped_folder(path: str, root: str, scanner: _Scanner, cache: dict[str, bool]) -> bool:
    """Whether a folder between *root* (exclusive) and *path* is excluded or a run folder."""
    stop = os.path.realpath(root)
    folder = os.path.dirname(os.path.realpath(path))
    while folder != stop and folder.startswith(stop):
        if folder not in cache:
            try:
                st = os.stat(folder)
                cache[folder] = scanner.skipped(Path(folder), (st.st_dev, st.st_ino)) is not None
            except OSError:
                cache[folder] = False
        if cache[folder]:
            return True
        folder = os.path.dirname(folder)
    return False


def _expand_glob(text: str, scanner: _Scanner) -> tuple[list[Path], InputError | None]:
    """Files matching the glob *text* (image extensions only, sorted), or why there are none.

    Matches inside an excluded or run folder below the pattern's fixed part are skipped (with an
    info line), like a folder search would.
    """
    matches = sorted(glob.glob(text, recursive=True))
    if not matches:
        return [], InputError(text, "no files match this pattern")
    root, cache = _glob_root(text), {}
    images = [m for m in matches if _has_image_suffix(m, scanner.extensions)]
    for m in images:
        special = _special_kind(m)
        if special is not None:
            scanner.errors.append(InputError(m, _special_cause(special)))
    images = [m for m in images if os.path.isfile(m)]
    kept = [Path(m) for m in images if not _in_skipped_folder(m, root, scanner, cache)]
    if len(kept) < len(images):
        _log.info(
            "%s: %d matches inside run or output folders not used",
            InputError(text, "").path,
            len(images) - len(kept),
        )
    if not kept:
        return [], InputError(text, "pattern matches no image files")
    return kept, None


def _expand_one(text: str, scanner: _Scanner) -> tuple[list[Path], list[InputError]]:
    """Expand one user input (file, folder or glob) into files and errors."""
    try:
        st = os.lstat(text) if text else None
    except FileNotFoundError:
        st = None
    except OSError as exc:
        return [], [InputError(text, _scan_cause(exc, folder=False))]
    if st is None:
        if text and _looks_like_glob(text):
            before = len(scanner.errors)
            images, error = _expand_glob(text, scanner)
            found = scanner.errors[before:]
            return images, found + ([error] if error and not found else [])
        return [], [InputError(text or "''", "no such file or directory")]
    path = Path(text)
    if path.is_dir():
        real = os.stat(text)
        why = scanner.skipped(path, (real.st_dev, real.st_ino))
        if why is not None:
            return [], [InputError(text, f"not searched for images: it is {why}")]
        before = len(scanner.errors)
        found = scanner.scan(path)
        errors = scanner.errors[before:]
        if not found and not errors:
            errors = [InputError(text, "folder contains no images")]
        return found, errors
    special = _special_kind(text)
    if special is not None:
        return [], [InputError(text, _special_cause(special))]
    if path.exists():
        return [path], []
    return [], [InputError(text, "broken symbolic link (its target is missing)")]


def collect_inputs(
    inputs: Sequence[str | Path], *, exclude: Sequence[str | os.PathLike[str]] = ()
) -> tuple[list[Path], list[InputError]]:
    """Expand user inputs into a list of image files, reporting everything that cannot be read.

    Each input may be:

    * a file: taken whatever its extension (a non-image file fails later, in ``load_image``);
    * a folder: searched recursively (symbolic links to folders followed, loops reported) for
      files whose extension (case-insensitive) is in :func:`image_extensions`, i.e. every format
      the decoder accepts; hidden files and folders (name starting with ``.``) are skipped;
      results are sorted by path. A folder without images is an error;
    * a glob pattern (``*``, ``?``, ``[...]``; ``**`` matches any depth): matching files with an
      image extension are taken (sorted); matched folders are ignored. A pattern that matches
      nothing, or matches no image file, is an error.

    What cannot be read is an error of its own, one line naming the path and the cause, never a
    silent drop: a missing path, a sub-folder without read permission, a path longer than the
    system allows (``ENAMETOOLONG``), a broken symbolic link with an image extension, a symbolic
    link loop, a FIFO, socket or device named like an image ("not a regular file"; never
    opened: reading a FIFO would block). Folders in *exclude* (e.g. the run's own output
    folder) and folders holding a camscope ``run.json`` (:func:`is_run_folder`) are not searched
    (an info line is logged); given explicitly as an input, such a folder is an error.
    Duplicates (same resolved path) are removed, keeping the first occurrence; otherwise the
    input order is preserved.

    Args:
        inputs: files, folders and glob patterns.
        exclude: folders never searched (need not exist).

    Returns:
        ``(files, errors)``: the files to process and one :class:`InputError` per problem.

    Example:
        >>> files, errors = collect_inputs(["photos/"], exclude=["photos/out"])  # doctest: +SKIP
    """
    files: list[Path] = []
    errors: list[InputError] = []
    seen: set[str] = set()
    scanner = _Scanner(exclude, image_extensions())
    for item in inputs:
        found, problems = _expand_one(os.fspath(item), scanner)
        errors.extend(problems)
        for path in found:
            try:
                key = str(path.resolve())
            except (OSError, RuntimeError):
                key = os.path.abspath(path)
            if key not in seen:
                seen.add(key)
                files.append(path)
    return files, errors


# --------------------------------------------------------------------------------------------
# Output names
# --------------------------------------------------------------------------------------------


def _sanitise(name: str) -> str:
    """Keep ``[A-Za-z0-9._-]``, replace anything else with ``_``; no leading dots."""
    clean = _NAME_RE.sub("_", name).lstrip(".")
    return clean or "image"


def _fit(name: str, limit: int) -> str:
    """*name* cut to *limit* characters (ASCII: bytes) with a hash of the whole name appended.

    Names already short enough are returned unchanged; cut names keep their start and end in
    ``~`` plus 8 hex digits of the SHA-256 of the full name, so names that differ only after the
    cut stay apart.
    """
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return f"{name[: max(limit - 9, 1)]}~{digest}"


def unique_names(paths: Sequence[Path], *, max_length: int = NAME_MAX - 15) -> list[str]:
    """Output base names for *paths*: sanitised file stems, unique ignoring case.

    Rules, applied deterministically:

    1. name = file stem with every character outside ``[A-Za-z0-9._-]`` replaced by ``_``
       (leading dots dropped, so outputs are never hidden files; empty -> ``"image"``);
    2. inputs whose names collide (case-insensitively) get as few parent folder names
       prefixed as separate them best (``a/cat.jpg``, ``b/cat.jpg`` -> ``a_cat``, ``b_cat``;
       ``a/x/cat.jpg``, ``b/x/cat.jpg`` -> ``a_x_cat``, ``b_x_cat``); files in the same folder
       get no prefix. Parents come from the resolved path;
    3. names longer than *max_length* bytes are cut and get ``~`` + 8 hex digits of the
       SHA-256 of the full name (:func:`_fit`), so a file name made from them (plus an
       extension of up to 15 bytes such as ``.png``) fits :data:`NAME_MAX`;
    4. names still equal get ``-2``, ``-3``... appended in input order (the first keeps its
       name), skipping any suffix that is already taken; the result is unique whatever the cut.

    Example:
        >>> unique_names([Path("a/cat.jpg"), Path("b/cat.jpg"), Path("dog.png")])  # doctest: +SKIP
        ['a_cat', 'b_cat', 'dog']
    """
    if max_length < 16:
        raise ValueError(f"max_length must be at least 16, got {max_length}")
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

    names = [_fit(name, max_length) for name in names]
    taken_later = {n.lower() for n in names}
    used: set[str] = set()
    result: list[str] = []
    for name in names:
        candidate = name
        if candidate.lower() in used:
            k = 2
            while True:
                candidate = f"{_fit(name, max_length - len(str(k)) - 1)}-{k}"
                if candidate.lower() not in used and candidate.lower() not in taken_later:
                    break
                k += 1
        used.add(candidate.lower())
        result.append(candidate)
    return result
