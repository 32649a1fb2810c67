"""Streaming, resumable runs: validated configuration, stages, run-folder schema.

Stages (each callable on its own, so other drivers such as Ray can run them)::

    ctx = prepare(RunConfig(...))      # every option checked, model loaded; nothing written
    record = open_run(ctx)             # fresh / resume / refuse / --overwrite; run.json
    todo = plan(ctx.config, done)      # collect, shard, skip finished (key, name) pairs
    out = BatchExplainer(ctx)(items, decoded)   # compute only
    RunWriter(ctx).write(out)          # I/O only: maps, overlays, results part file
    finalize(ctx, record, state="complete")     # predictions.csv, metrics, report, run.json

`drive` (`camscope.run.driver`) is the one driver around them: open -> plan -> an execution
step -> finalize; `run_local` gives it the in-process step, `camscope.run.ray_runner` the Ray
one. `explain` is the library call behind ``camscope run``. The run folder's layout is known
only to `camscope.io.runfolder` (re-exported here as `results`, its historical name).
"""

from camscope.run import results
from camscope.run.collect import Plan, WorkItem, plan
from camscope.run.config import RunConfig, RunContext, UsageError, prepare, probe_device
from camscope.run.driver import drive
from camscope.run.explainer import BatchExplainer, BatchOutput
from camscope.run.finalize import finalize
from camscope.run.folder import open_run
from camscope.run.local import RunResult, explain, run_local
from camscope.run.writer import RunWriter, session_prefix

__all__ = [
    "BatchExplainer",
    "BatchOutput",
    "Plan",
    "RunConfig",
    "RunContext",
    "RunResult",
    "RunWriter",
    "UsageError",
    "WorkItem",
    "drive",
    "explain",
    "finalize",
    "open_run",
    "plan",
    "prepare",
    "probe_device",
    "results",
    "run_local",
    "session_prefix",
]
