"""The in-process driver: prepare -> open_run -> plan -> (decode -> explain -> write)* -> finalize.

Images stream through bounded stages: `camscope.io.iter_images` decodes a few images ahead in
background threads, `BatchExplainer` computes one batch at a time, `RunWriter` writes it, and
nothing is kept per image afterwards, so memory does not grow with the number of images.

Interruption: when ``stop`` is set (the CLI sets it on the first Ctrl-C) the batch in progress
is finished and written, the run is recorded as ``interrupted`` in run.json and `run_local`
returns; a `KeyboardInterrupt` (second Ctrl-C, or a library caller without ``stop``) drops the
batch in progress, records ``interrupted`` and is raised again. Running the same command again
resumes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from camscope.io import LoadedImage, iter_images, runfolder
from camscope.models import LoadedModel, ModelError, wrap_module
from camscope.run.collect import Plan, WorkItem, plan
from camscope.run.config import RunConfig, RunContext, UsageError, prepare
from camscope.run.explainer import BatchExplainer
from camscope.run.finalize import finalize
from camscope.run.folder import open_run
from camscope.run.writer import RunWriter

__all__ = ["RunResult", "explain", "run_local"]

log = logging.getLogger("camscope")

Progress = Callable[[int, int], None]


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


def _batches(
    items: list[WorkItem], ctx: RunContext, writer: RunWriter
) -> Iterator[tuple[list[WorkItem], list[LoadedImage]]]:
    loaded, size = ctx.loaded, ctx.config.batch_size
    decoded = iter_images(
        [it.path for it in items],
        size=loaded.input_size,
        mean=loaded.mean,
        std=loaded.std,
        max_pixels=ctx.config.max_pixels,
    )
    batch: list[tuple[WorkItem, LoadedImage]] = []
    try:
        for item, image in zip(items, decoded, strict=True):
            if image.error is not None:
                writer.fail(item, image.error.cause)
                continue
            batch.append((item, image))
            if len(batch) == size:
                yield [b[0] for b in batch], [b[1] for b in batch]
                batch = []
        if batch:
            yield [b[0] for b in batch], [b[1] for b in batch]
    finally:
        decoded.close()


def _explain_all(
    ctx: RunContext,
    todo: Plan,
    writer: RunWriter,
    explainer: BatchExplainer,
    stop: threading.Event | None,
    progress: Progress | None,
) -> str:
    start = last = time.perf_counter()
    done = 0
    if stop is not None and stop.is_set():  # Ctrl-C while the model was loading
        return "interrupted"
    for items, decoded in _batches(todo.items, ctx, writer):
        writer.write(explainer(items, decoded))
        done += len(items)
        if progress is not None:
            progress(done, len(todo.items))
        elif time.perf_counter() - last > 60:
            last = time.perf_counter()
            log.info("explain: %d of %d image(s) (%.0f s)", done, len(todo.items), last - start)
        if stop is not None and stop.is_set():
            return "interrupted"
    return "complete"


def run_local(
    config: RunConfig,
    *,
    stop: threading.Event | None = None,
    progress: Progress | None = None,
    loaded: LoadedModel | None = None,
) -> RunResult:
    """Run ``config`` in this process. Raises UsageError before anything is written."""
    t0 = time.perf_counter()
    ctx = prepare(config, loaded=loaded)
    record = open_run(ctx)
    done = (
        runfolder.done_keys(ctx.out_dir, ctx.settings_hash, ctx.methods)
        if record["resumed"]
        else set()
    )
    todo = plan(config, done)
    log.info(
        "collect: %d input(s), %d to explain (%.1f s)",
        todo.n_total + len(todo.failures),
        len(todo.items),
        time.perf_counter() - t0,
    )
    if record["resumed"]:
        log.info("resuming: %s of %s done", f"{todo.n_done:,}", f"{todo.n_total:,}")
    writer = RunWriter(ctx)
    for item in todo.failures:
        writer.fail(item, item.error or "failed")
    explainer = BatchExplainer(ctx)
    state, t1 = "failed", time.perf_counter()
    try:
        state = _explain_all(ctx, todo, writer, explainer, stop, progress)
    except KeyboardInterrupt:
        state = "interrupted"
        raise
    finally:
        writer.close()
        explainer.close()
        seconds = {
            "explain": round(time.perf_counter() - t1, 2),
            **{f"method_{k}": round(v, 2) for k, v in explainer.seconds.items()},
        }
        log.info("explain: %d image(s) (%.1f s)", writer.n_ok, seconds["explain"])
        record.update(
            seconds=seconds,
            method_counters=explainer.counters,
            notes=list(dict.fromkeys([*record["notes"], *explainer.notes()])),
            counts=_counts(todo, writer),
            problems=list(writer.problems),
        )
        changed = bool(writer.n_ok) or not record["resumed"]
        final = finalize(ctx, record, state=state, stop=stop, changed=changed)
    return RunResult(
        ctx.out_dir,
        final.state,
        todo.n_total,
        todo.n_done,
        writer.n_ok,
        writer.n_failed,
        writer.problems + final.problems,
        seconds,
        record["notes"],
        final.files,
    )


def _counts(todo: Plan, writer: RunWriter) -> dict[str, Any]:
    return {
        "inputs": todo.n_total + len(todo.failures),
        "done_before": todo.n_done,
        "explained": writer.n_ok,
        "failed": writer.n_failed,
    }


def explain(
    inputs: Sequence[str | Path],
    out_dir: str | Path = "camscope-output",
    *,
    model: str | LoadedModel | nn.Module | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    categories: Sequence[str] | None = None,
    **options: Any,
) -> RunResult:
    """Explain every image under ``inputs`` and write the run folder (``camscope run``).

    Args:
        inputs: image files, folders (searched recursively) or glob patterns.
        out_dir: the run folder (resumed when it holds a run with the same settings).
        model: a model name, an already `LoadedModel`, your own ``nn.Module`` (with ``mean``
            and ``std``, and optionally ``categories``; see `camscope.models.wrap_module`), or
            None for the default.
        mean: the per-channel mean an ``nn.Module`` expects (inputs scaled to [0, 1]).
        std: the per-channel standard deviation an ``nn.Module`` expects.
        categories: class names of an ``nn.Module`` (default ``class 0`` ...).
        **options: any `RunConfig` field (``methods``, ``metrics``, ``batch_size``, ...).

    Example::

        >>> import camscope
        >>> result = camscope.explain(["photos/"], "out", methods=("gradcam",),
        ...                           model="efficientnet_lite0")     # doctest: +SKIP
        >>> result.state, result.n_explained                           # doctest: +SKIP
        ('complete', 12)

    Raises:
        camscope.run.UsageError: before anything is written.
    """
    if isinstance(model, nn.Module):
        try:  # a Hugging Face model declares its own; any other needs mean= and std=
            model = wrap_module(model, mean, std, categories)
        except ModelError as exc:
            raise UsageError(f"explain(model=<nn.Module>): {exc}") from exc
    given = model if isinstance(model, LoadedModel) else None
    name = given.name if given is not None else model
    if "methods" in options:
        options["methods"] = tuple(options["methods"])
    config = RunConfig(
        inputs=tuple(str(i) for i in inputs), out_dir=str(out_dir), model=name, **options
    )
    return run_local(config, loaded=given)
