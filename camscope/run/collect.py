"""Stage 1, collect: the inputs of a run as `WorkItem` (path, output name, content key).

Inputs are image files, folders (searched recursively), globs and ``--inputs-from FILE`` (one
path per line, ``#`` comments and blank lines skipped, or a CSV whose header has a ``file``
column; relative paths are relative to the list file's folder). Files inside the run folder are
never inputs (an output folder inside an input folder is not read back).

Sharding (``--shard I/N``) is deterministic and independent of the machine: an input belongs to
shard ``int(sha256(rel)[:8], 16) % N`` where ``rel`` is its path relative to the input folder
it was found in (the path as given for files, globs and list entries), so N jobs given the same
inputs on differently mounted machines split them exactly, each input in one shard. Output
names come from the whole (unsharded) input list, so shards name images as a single run would.

The key of an input is the sha256 of its bytes (32 hex digits); with its name and the settings
hash it identifies finished work for resume.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from camscope.io import collect_inputs, unique_names
from camscope.io.runfolder import escape_path
from camscope.run.config import RunConfig, UsageError

__all__ = ["Plan", "WorkItem", "content_key", "gather", "plan", "read_inputs_from", "shard_of"]

log = logging.getLogger("camscope")


@dataclass(frozen=True)
class WorkItem:
    """One input: its path, unique output name and content key (``error`` when unusable)."""

    path: Path
    name: str
    key: str
    error: str | None = None

    @property
    def file(self) -> str:
        r"""The path as text for tables and messages (non-UTF-8 bytes escaped as ``\xNN``)."""
        return escape_path(self.path)


@dataclass
class Plan:
    """What a run has to do: ``items`` still to explain, ``failures`` found while collecting."""

    items: list[WorkItem] = field(default_factory=list)
    failures: list[WorkItem] = field(default_factory=list)
    n_total: int = 0
    n_done: int = 0
    #: the inputs of this run already done (in ``done``), not explained again
    skipped: list[WorkItem] = field(default_factory=list)
    #: the output names of every input collected, before sharding
    names: set[str] = field(default_factory=set)


def read_inputs_from(path: str | Path) -> list[str]:
    """Paths listed in ``path``: a CSV with a ``file`` column, else one path per line."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8", "surrogateescape")
    except OSError as exc:
        raise UsageError(f"--inputs-from {path}: cannot read ({exc.strerror or exc})") from exc
    lines = text.splitlines()
    first = next((ln for ln in lines if ln.strip()), "")
    if "file" in [c.strip() for c in next(csv.reader([first]), [])] and "," in first:
        entries = [row["file"] for row in csv.DictReader(lines) if (row.get("file") or "").strip()]
    else:
        entries = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    base = path.parent
    return [e if os.path.isabs(e) else os.fspath(base / e) for e in entries]


def shard_of(rel: str, n: int) -> int:
    """The shard (0..n-1) of an input whose path relative to its root is ``rel``."""
    digest = hashlib.sha256(os.fsencode(rel.replace(os.sep, "/"))).hexdigest()
    return int(digest[:8], 16) % n


def content_key(path: Path) -> str:
    """sha256 of the file's bytes, 32 hex digits (OSError when unreadable)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:32]


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder)
    except (ValueError, OSError, RuntimeError):
        return False
    return True


def _relative(path: Path, roots: list[Path]) -> str:
    for root in roots:
        try:
            return os.fspath(path.relative_to(root))
        except ValueError:
            continue
    return os.fspath(path)


def gather(config: RunConfig) -> tuple[list[Path], list[WorkItem], list[str]]:
    """All inputs (before sharding), collection failures, and their shard-relative paths."""
    given = list(config.inputs)
    if config.inputs_from:
        given += read_inputs_from(config.inputs_from)
    out = Path(config.out_dir).resolve()
    # an input given inside the run folder (the demo's DIR/inputs) is taken; nothing else there
    allowed = [Path(g).resolve() for g in given if os.path.exists(g) and _inside(Path(g), out)]
    paths, errors = collect_inputs(given, exclude=[] if allowed else [out])
    kept = [p for p in paths if not _inside(p, out) or any(_inside(p, a) for a in allowed)]
    if len(kept) < len(paths):
        log.info(
            "collect: %d file(s) inside the run folder %s are not inputs",
            len(paths) - len(kept),
            config.out_dir,
        )
    roots = [Path(g) for g in given if os.path.isdir(g)]
    roots.sort(key=lambda r: len(r.parts), reverse=True)  # the innermost root wins
    failures = [WorkItem(Path(e.path), "", _missing_key(e.path), e.cause) for e in errors]
    return kept, failures, [_relative(p, roots) for p in kept]


def _missing_key(path: str | os.PathLike[str]) -> str:
    return "path:" + hashlib.sha256(os.fsencode(path)).hexdigest()[:27]


def _keyed(path: Path, name: str) -> WorkItem:
    try:
        return WorkItem(path, name, content_key(path))
    except OSError as exc:
        return WorkItem(path, name, _missing_key(path), f"cannot read ({exc.strerror or exc})")


def plan(config: RunConfig, done: set[tuple[str, str]] | None = None) -> Plan:
    """The inputs of this run (shard applied), minus those in ``done`` ((key, name) pairs)."""
    paths, failures, rels = gather(config)
    names = unique_names(paths)
    chosen = list(zip(paths, names, strict=True))
    if config.shard is not None:
        i, n = config.shard
        chosen = [pn for pn, rel in zip(chosen, rels, strict=True) if shard_of(rel, n) == i]
        if n > 1:  # collection failures are reported by shard 0 only
            failures = failures if i == 0 else []
    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="camscope-hash") as pool:
        items = list(pool.map(lambda pn: _keyed(*pn), chosen))
    todo = [it for it in items if it.error is None]
    failures += [it for it in items if it.error is not None]
    done = done or set()
    remaining = [it for it in todo if (it.key, it.name) not in done]
    skipped = [it for it in todo if (it.key, it.name) in done]
    return Plan(remaining, failures, len(items), len(skipped), skipped, set(names))
