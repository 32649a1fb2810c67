"""The run folder's life: fresh, resumed, refused or overwritten; run.json state.

`open_run` decides, before anything is written, what an existing folder means:

* no folder, or a folder without camscope outputs: a fresh run;
* a camscope run with the same settings: resume (finished images are skipped);
* a run with other settings: refused (UsageError naming each differing setting);
* outputs camscope does not recognise as a run of this version (an older run, a damaged
  run.json): refused, never mixed into the new run;
* ``--overwrite``: the files the run-folder schema knows (run.json, results/, derived files,
  grid pages, ``.npy``/``.png`` in the map folders) are first moved into one hidden folder (a
  rename each, so the old run disappears at once) and then deleted; other files stay.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import secrets
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from camscope._version import __version__
from camscope.errors import one_line
from camscope.io import TEMP_PREFIX, runfolder, write_json
from camscope.run import _methods
from camscope.run.config import RunContext, UsageError, config_record

__all__ = ["known_entries", "open_run", "remove_temporaries", "run_record", "write_run_json"]

log = logging.getLogger("camscope")


def known_entries(out: Path) -> list[Path]:
    """Entries of ``out`` that belong to a camscope run (what --overwrite removes)."""
    if not out.is_dir():
        return []
    found = [out / n for n in (runfolder.RUN_JSON, runfolder.RESULTS, *runfolder.DERIVED_FILES)]
    found = [p for p in found if os.path.lexists(p)]
    found += sorted(p for p in out.glob(runfolder.GRID_GLOB))
    for method in _methods.method_names():
        folder = out / method
        if folder.is_dir() and not folder.is_symlink():
            found += sorted(
                p for p in folder.iterdir() if p.suffix.lstrip(".") in runfolder.MAP_KINDS
            )
    return found


def _remove(out: Path, entries: list[Path]) -> None:
    trash = out / f".camscope-old-{secrets.token_hex(4)}"
    trash.mkdir()
    for i, path in enumerate(entries):
        os.replace(path, trash / f"{i}-{path.name}")
    shutil.rmtree(trash, ignore_errors=True)
    for method in _methods.method_names():
        with contextlib.suppress(OSError):
            (out / method).rmdir()  # only when now empty


def remove_temporaries(out: Path) -> None:
    """Temporary files a killed writer left (never a visible output: writes are atomic).

    Call only while no writer is active: at the start of a resumed run, in `finalize`.
    """
    folders = [out, out / runfolder.RESULTS, *(out / m for m in _methods.method_names())]
    for folder in folders:
        if folder.is_dir():
            for path in folder.glob(f"{TEMP_PREFIX}*.tmp"):
                with contextlib.suppress(OSError):
                    path.unlink()


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [
        f"{k}: {old.get(k)!r} in the folder, {new.get(k)!r} now"
        for k in keys
        if old.get(k) != new.get(k)
    ]


def open_run(ctx: RunContext) -> dict[str, Any]:
    """Check the folder against the run, make it ready and write run.json (state "running").

    Returns the run record (run.json's content) with ``resumed`` True when continuing.

    Raises:
        UsageError: other settings, or outputs that are not a run of this version.
    """
    out = ctx.out_dir
    entries = known_entries(out)
    previous = None
    if entries and ctx.config.overwrite:
        try:
            _remove(out, entries)
        except OSError as exc:
            raise UsageError(f"{out}: cannot remove the earlier run ({exc})") from exc
        log.info("overwrite: removed %d file(s) of the earlier run in %s", len(entries), out)
    elif entries:
        try:
            previous = runfolder.read_run(out)
        except runfolder.RunFolderError as exc:
            raise UsageError(
                f"{exc}; {out} holds outputs that are not a {runfolder.FORMAT_NAME}: "
                "use --overwrite to replace them, or another --out"
            ) from None
        if previous.get("settings_hash") != ctx.settings_hash:
            diff = _differences(previous.get("settings", {}), ctx.settings)
            raise UsageError(
                f"{out} holds a run with other settings ({'; '.join(diff) or '?'}); "
                "use --overwrite to replace it, or another --out"
            )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{out}: output folder cannot be written ({exc.strerror or exc})") from exc
    if previous is not None:
        remove_temporaries(out)
    record = run_record(ctx, previous)
    try:
        write_json(out / runfolder.RUN_JSON, record)
    except OSError as exc:
        raise UsageError(
            f"{out / runfolder.RUN_JSON}: cannot write ({exc.strerror or exc})"
        ) from exc
    return record


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine() or "cpu"


def run_record(ctx: RunContext, previous: dict[str, Any] | None) -> dict[str, Any]:
    """run.json's content at the start of a session (``previous``: the resumed run's)."""
    loaded = ctx.loaded
    sessions = list((previous or {}).get("sessions", []))
    cfg = ctx.config
    sessions.append(
        {
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "argv": cfg.argv,
            "inputs": list(cfg.inputs),
            "inputs_from": cfg.inputs_from,
        }
    )
    return {
        "camscope_version": __version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "state": "running",
        "resumed": previous is not None,
        **config_record(ctx),
        "model": loaded.name,
        "layer": ctx.layer,
        "methods": list(ctx.methods),
        "image_size": list(loaded.input_size),
        "mean": list(loaded.mean),
        "std": list(loaded.std),
        "weights_source": loaded.weights_source,
        "device": str(ctx.device),
        "device_name": _device_name(ctx.device),
        "threads": torch.get_num_threads(),
        "notes": list(loaded.notes),
        "sessions": sessions,
    }


def write_run_json(out: Path, record: dict[str, Any]) -> str | None:
    """Write run.json; None, or the one-line problem when it could not be written."""
    path = out / runfolder.RUN_JSON
    try:
        write_json(path, record)
    except (OSError, TypeError, ValueError) as exc:
        cause = getattr(exc, "strerror", None) or one_line(exc, None)
        return f"{runfolder.escape_path(path)}: cannot write run state ({cause})"
    return None
