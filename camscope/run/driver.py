"""The one driver of a run: open_run -> plan -> execute -> finalize, for every way of executing.

`drive` does what every run does around the explaining itself: open the folder (fresh, resume,
refuse, overwrite), plan the work (collect, shard, skip what is done, say what the folder
already holds from other inputs), then call the *execution step* it is given, and finalize the
folder (tables, report, run.json) whatever happened, Ctrl-C included. The execution step is the
only part that differs: `camscope.run.local` decodes, explains and writes batches in this
process; `camscope.run.ray_runner` streams the same batches through Ray tasks and actors.

An execution step is ``execute(ctx, todo, record, tally)``: it explains ``todo.items``, records
``todo.failures`` as failed inputs, fills ``tally`` as it goes (so an interrupted step still
leaves true counts) and returns the state, ``complete`` or ``interrupted`` (``failed`` when it
could not run). It may add facts about itself to ``record`` (run.json).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from camscope.io import runfolder
from camscope.run.collect import Plan, plan
from camscope.run.config import RunContext
from camscope.run.finalize import finalize
from camscope.run.folder import open_run

__all__ = ["Execute", "RunResult", "Tally", "drive"]

log = logging.getLogger("camscope")


@dataclass
class RunResult:
    """What a run did. ``state``: complete, interrupted or failed."""

    out_dir: Path
    state: str
    n_total: int = 0
    n_done_before: int = 0
    n_explained: int = 0
    n_failed: int = 0
    problems: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Everything was explained and written."""
        return self.state == "complete" and not self.n_failed and not self.problems


@dataclass
class Tally:
    """What an execution step did so far (filled as it goes; read by `drive` at the end).

    Attributes:
        n_ok: images explained and written.
        n_failed: inputs that failed, those found while planning included.
        problems: one line per output that could not be written.
        notes: substitutions and other facts said once (run.json ``notes``).
        seconds: timings for run.json (``explain``, per method ...).
        record: other run.json entries of the step (``method_counters``, ...).
    """

    n_ok: int = 0
    n_failed: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    record: dict[str, Any] = field(default_factory=dict)


Execute = Callable[[RunContext, Plan, dict, Tally], str]


def drive(ctx: RunContext, execute: Execute, *, stop: Any = None) -> RunResult:
    """Open ``ctx``'s run folder, plan, run ``execute`` and finalize the folder.

    ``stop`` (a `threading.Event`): set by the caller to interrupt; finalize then records the
    run as interrupted. A `KeyboardInterrupt` inside ``execute`` is recorded the same way and
    raised again. Raises `camscope.run.UsageError` before anything is written.
    """
    t0 = time.perf_counter()
    record = open_run(ctx)
    done = (
        runfolder.done_keys(ctx.out_dir, ctx.settings_hash, ctx.methods)
        if record["resumed"]
        else set()
    )
    todo = plan(ctx.config, done)
    n_inputs = todo.n_total + len(todo.failures)
    log.info(
        "collect: %d input(s), %d to explain (%.1f s)",
        n_inputs,
        len(todo.items),
        time.perf_counter() - t0,
    )
    if record["resumed"]:
        log.info("resuming: %s of %s done", f"{todo.n_done:,}", f"{todo.n_total:,}")
        _other_inputs(ctx, todo)
    tally, state, t1 = Tally(), "failed", time.perf_counter()
    try:
        state = execute(ctx, todo, record, tally)
    except KeyboardInterrupt:
        state = "interrupted"
        raise
    finally:
        tally.seconds = {"explain": round(time.perf_counter() - t1, 2), **tally.seconds}
        log.info("explain: %d image(s) (%.1f s)", tally.n_ok, tally.seconds["explain"])
        record.update(
            seconds=tally.seconds,
            **tally.record,
            notes=list(dict.fromkeys([*record["notes"], *tally.notes])),
            counts={
                "inputs": n_inputs,
                "done_before": todo.n_done,
                "explained": tally.n_ok,
                "failed": tally.n_failed,
            },
            problems=[*record.get("problems", []), *tally.problems],
        )
        changed = bool(tally.n_ok) or not record["resumed"]
        final = finalize(ctx, record, state=state, stop=stop, changed=changed)
    return RunResult(
        ctx.out_dir,
        final.state,
        todo.n_total,
        todo.n_done,
        tally.n_ok,
        tally.n_failed,
        tally.problems + final.problems,
        tally.seconds,
        record["notes"],
        final.files,
    )


def _same_file(path: Path, recorded: str) -> bool:
    """Whether ``recorded`` (a results-table ``file``) names ``path``, however spelt."""
    try:
        return os.path.realpath(runfolder.unescape_path(recorded)) == os.path.realpath(path)
    except (OSError, ValueError):
        return False


def _other_inputs(ctx: RunContext, todo: Plan) -> None:
    """A run into a folder that holds images of other inputs adds to it, and says so.

    One warning line each: the images of the folder that are not among these inputs (the
    folder's tables and report describe them all, these inputs added); the inputs already in
    the run as the same image (same output name and bytes) from another path (not explained
    again: the run lists them under the path they were first explained from). An input whose
    output name is taken by a different image of the run, from another path, is not explained:
    it is a failed input, one line naming both (the folder's maps of that name stay the other
    image's). Moves those from ``todo.items`` to ``todo.failures``.
    """
    table = runfolder.read_table([ctx.out_dir], columns=["file", "settings_hash"])
    cols = [table.column(c).to_pylist() for c in ("name", "key", "file", "status", "settings_hash")]
    held: dict[str, tuple[str, str]] = {}
    for name, key, file, status, h in zip(*cols, strict=True):
        if status == "ok" and h == ctx.settings_hash:
            held.setdefault(name, (key, file))
    others = sorted(n for n in held if n not in todo.names)
    where = runfolder.escape_path(ctx.out_dir)
    if others:
        log.warning(
            "%s",
            f"adding to the run in {where}: it holds {len(others):,} image(s) that are not "
            f"among these inputs (e.g. {held[others[0]][1]}); its tables and report describe "
            "every image of the run, these inputs included",
        )
    moved = [
        (it.file, held[it.name][1])
        for it in todo.skipped
        if it.name in held and not _same_file(it.path, held[it.name][1])
    ]
    if moved:
        log.warning(
            "%s",
            f"{len(moved):,} input(s) are already in the run as the same image (same name and "
            f"bytes) from another path, e.g. {moved[0][0]} = {moved[0][1]}: not explained "
            "again; the run lists them under that path",
        )
    keep = []
    for it in todo.items:
        key, file = held.get(it.name, (it.key, it.file))
        if key != it.key and not _same_file(it.path, file):
            cause = (
                f"output name {it.name} is taken in the run {where} by another image ({file}); "
                "not explained (use another --out, or --overwrite)"
            )
            todo.failures.append(replace(it, error=cause))
        else:
            keep.append(it)
    todo.items = keep
