"""The in-process run: prepare -> `drive` (open_run -> plan -> this execution step -> finalize).

The execution step here is (decode -> explain -> write)* in this process; `camscope.run.driver`
does the rest, for this run and the Ray run alike.

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
from pathlib import Path
from typing import Any

from torch import nn

from camscope.io import LoadedImage, iter_images
from camscope.models import LoadedModel, ModelError, wrap_module
from camscope.run.collect import Plan, WorkItem
from camscope.run.config import RunConfig, RunContext, UsageError, prepare
from camscope.run.driver import RunResult, Tally, drive
from camscope.run.explainer import BatchExplainer, make_explainer
from camscope.run.writer import RunWriter
from camscope.tasks.registry import get_task

__all__ = ["RunResult", "explain", "run_local"]

log = logging.getLogger("camscope")

Progress = Callable[[int, int], None]


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
    ctx = prepare(config, loaded=loaded)

    def execute(ctx: RunContext, todo: Plan, _record: dict, tally: Tally) -> str:
        return _execute(ctx, todo, tally, stop, progress)

    return drive(ctx, execute, stop=stop)


def _execute(
    ctx: RunContext,
    todo: Plan,
    tally: Tally,
    stop: threading.Event | None,
    progress: Progress | None,
) -> str:
    """The in-process execution step: decode -> explain -> write, batch after batch."""
    writer = RunWriter(ctx)
    for item in todo.failures:
        writer.fail(item, item.error or "failed")
    explainer = make_explainer(ctx)
    try:
        return _explain_all(ctx, todo, writer, explainer, stop, progress)
    finally:
        writer.close()
        explainer.close()
        tally.n_ok, tally.n_failed = writer.n_ok, writer.n_failed
        tally.problems = list(writer.problems)
        tally.notes = explainer.notes()
        tally.seconds = {f"method_{k}": round(v, 2) for k, v in explainer.seconds.items()}
        tally.record["method_counters"] = explainer.counters


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
    task = get_task(options.get("task", "classify"))
    if isinstance(model, nn.Module) and task.per_object:  # the task knows its models' inputs
        given = {"mean": mean, "std": std, "categories": categories}
        made = {"model": model, **{k: v for k, v in given.items() if v is not None}}
        try:
            model = task.load(f"<{type(model).__name__}>", random_weights=False, device="cpu",
                              made=made)  # fmt: skip
        except ModelError as exc:
            raise UsageError(f"explain(model=<nn.Module>): {exc}") from exc
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
