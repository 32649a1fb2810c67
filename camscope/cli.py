"""Command line: ``camscope run``, ``demo``, ``evaluate``, ``report``, ``layers``.

Exit codes: 0 all done, 1 some inputs (or outputs) failed, each said on one line, 2 usage error
(nothing was written), 130 interrupted (Ctrl-C; the same command resumes).

The library reports through ``logging.getLogger("camscope")`` and `warnings`; this module
turns both into one-line ``camscope: warning: ...`` / ``camscope: error: ...`` messages and
progress lines (``camscope: <stage>: ... (12.3 s)``; a tqdm bar when stderr is a terminal).
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from camscope._version import __version__

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

DEMO_IMAGES = {
    "cat": "chelsea",
    "coffee": "coffee",
    "astronaut": "astronaut",
    "rocket": "rocket",
    "motorcycle": "stereo_motorcycle",
}


class _LineHandler(logging.Handler):
    """``camscope: error: ...`` / ``camscope: warning: ...`` / ``camscope: ...`` on stderr."""

    def __init__(self, quiet: bool) -> None:
        super().__init__(logging.INFO)
        self.quiet = quiet
        self.bar: Any = None

    def emit(self, record: logging.LogRecord) -> None:
        text = " ".join(record.getMessage().split())
        if record.levelno >= logging.ERROR:
            line = f"camscope: error: {text}"
        elif record.levelno >= logging.WARNING:
            line = f"camscope: warning: {text}"
        elif self.quiet:
            return
        else:
            line = f"camscope: {text}"
        if self.bar is not None:
            self.bar.write(line, file=sys.stderr)
        else:
            click.echo(line, err=True)


@contextmanager
def _reporting(quiet: bool) -> Iterator[_LineHandler]:
    """Route camscope's log records and Python warnings to one-line stderr messages."""
    logger = logging.getLogger("camscope")
    handler = _LineHandler(quiet)
    old_level, old_show = logger.level, warnings.showwarning
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False

    def show(message: Any, category: type, *_args: Any, **_kwargs: Any) -> None:
        logger.warning("%s", f"{message} ({category.__name__})")

    warnings.showwarning = show  # type: ignore[assignment]
    try:
        yield handler
    finally:
        warnings.showwarning = old_show
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        logger.propagate = True


@contextmanager
def _sigint(stop: threading.Event) -> Iterator[None]:
    """First Ctrl-C: finish the batch in progress; second: stop at once (KeyboardInterrupt)."""

    def handler(_signum: int, _frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def _usage(message: str) -> int:
    click.echo(f"camscope: error: {' '.join(message.split())}", err=True)
    return EXIT_USAGE


def _progress(handler: _LineHandler, quiet: bool) -> Callable[[int, int], None] | None:
    if quiet or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    def update(done: int, total: int) -> None:
        if handler.bar is None:
            handler.bar = tqdm(total=total, unit="image", file=sys.stderr, dynamic_ncols=True)
        handler.bar.update(done - handler.bar.n)

    return update


def _summary(result: Any, quiet: bool) -> int:
    if result.state == "interrupted":
        click.echo(
            f"camscope: interrupted: {result.n_done_before + result.n_explained} of "
            f"{result.n_total} image(s) done in {result.out_dir} (run.json: interrupted); "
            "the same command resumes",
            err=True,
        )
        return EXIT_INTERRUPTED
    if not quiet:
        click.echo(
            f"camscope: {result.n_explained} image(s) explained -> {result.out_dir}"
            + (f" ({result.n_done_before} done before)" if result.n_done_before else ""),
            err=True,
        )
    if result.n_failed or result.problems:
        click.echo(
            f"camscope: {result.n_failed} input(s) failed, {len(result.problems)} output "
            "problem(s) (each said above; also in the results table and run.json)",
            err=True,
        )
        return EXIT_FAILED
    return EXIT_OK


def _execute(config: Any, quiet: bool, runner: Callable[..., Any] | None = None) -> int:
    from camscope.run import UsageError, run_local

    stop = threading.Event()
    with _reporting(quiet) as handler, _sigint(stop):
        try:
            result = (runner or run_local)(config, stop=stop, progress=_progress(handler, quiet))
        except UsageError as exc:
            return _usage(str(exc))
        except KeyboardInterrupt:
            click.echo(
                f"camscope: interrupted: stopped at once; {config.out_dir} keeps the "
                "finished images (the same command resumes)",
                err=True,
            )
            return EXIT_INTERRUPTED
        finally:
            if handler.bar is not None:
                handler.bar.close()
                handler.bar = None
    return _summary(result, quiet)


def _method_flags() -> list[Callable]:
    """Click options for the methods' own options, from the registry (default None: not given)."""
    from camscope.methods import registry

    return registry.click_options()


def _run_flags() -> list[Callable]:
    """Click options of `camscope run`, made from `RunConfig`'s one declaration of them."""
    from camscope.run.config import click_options

    return click_options()


def _config_flags(*names: str) -> Callable:
    """The `RunConfig` flags ``names`` for a command other than ``run`` (same declaration)."""
    from camscope.run.config import click_options

    def add(func):  # type: ignore[no-untyped-def]
        for option in reversed(click_options(names)):
            func = option(func)
        return func

    return add


_ray_options = [
    click.option(
        "--ray",
        "ray_address",
        is_flag=False,
        flag_value="local",
        default=None,
        metavar="[ADDRESS]",
        help="Run on Ray (pip install 'camscope[ray]'): alone or 'local' starts a private "
        "cluster on 127.0.0.1; 'auto' or HOST:PORT joins a running one. The output folder "
        "must be visible to every node.",
    ),
    click.option(
        "--workers",
        type=int,
        default=None,
        help="With --ray: explain actors, each loading the model once (default 1; one GPU "
        "each on GPU clusters).",
    ),
]


def _ray_runner(address: str | None, workers: int | None) -> Callable[..., Any] | None:
    """The Ray driver for --ray/--workers (None: the in-process run); ValueError if misused."""
    if address is None:
        if workers is not None:
            raise ValueError("--workers needs --ray")
        return None
    from camscope.run.ray_runner import RayOptions, parse_address, run_ray

    options = RayOptions(address=parse_address(address), workers=1 if workers is None else workers)
    if options.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {options.workers}")
    return lambda config, **kw: run_ray(config, options, **kw)


_QUIET = click.option("--quiet", "-q", is_flag=True, help="Errors and warnings only.")


def _add_options(func):  # type: ignore[no-untyped-def]
    for option in reversed([*_run_flags(), _QUIET, *_method_flags()]):
        func = option(func)
    return func


class _Group(click.Group):
    """The CLI group: a Ctrl-C anywhere in a command is one line and exit 130.

    Not only in the run loop, and never click's "Aborted!" with exit 1 (the code for "some
    inputs failed").
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (KeyboardInterrupt, click.exceptions.Abort):
            click.echo("camscope: interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="camscope")
def main() -> None:
    """camscope: class activation maps, measured."""


@main.command()
@click.argument("inputs", nargs=-1)
@_add_options
@_ray_options[0]
@_ray_options[1]
def run(
    inputs: tuple[str, ...],
    quiet: bool,
    ray_address: str | None,
    workers: int | None,
    **kwargs: Any,
) -> None:
    """Explain INPUTS (image files, folders searched recursively, or globs)."""
    from camscope.methods.registry import option_keys
    from camscope.run import UsageError
    from camscope.run.config import from_command_line

    try:
        runner = _ray_runner(ray_address, workers)
        given = {k: kwargs.pop(k) for k in option_keys()}
        config = from_command_line(inputs, kwargs, given, argv=sys.argv)
    except (ValueError, UsageError) as exc:
        sys.exit(_usage(str(exc)))
    sys.exit(_execute(config, quiet, runner))


@main.command()
@click.option("--out", "-o", default="camscope-demo", show_default=True, help="Output folder.")
@_config_flags("model", "device")
@click.option(
    "--metrics/--no-metrics",
    default=False,
    show_default=True,
    help="Also measure faithfulness and write the report.",
)
@click.option("--quiet", "-q", is_flag=True)
def demo(out: str, model: str | None, device: str, metrics: bool, quiet: bool) -> None:
    """Run the default methods on scikit-image's sample photos, offline."""
    import skimage.data

    from camscope.io import save_png
    from camscope.run import RunConfig

    inputs_dir = Path(out) / "inputs"
    try:
        for name, loader in DEMO_IMAGES.items():
            image = getattr(skimage.data, loader)()
            image = image[0] if isinstance(image, tuple) else image
            save_png(inputs_dir / f"{name}.png", image)
    except OSError as exc:
        sys.exit(_usage(f"{out}: cannot write demo inputs ({exc})"))
    config = RunConfig(
        inputs=(str(inputs_dir),),
        out_dir=out,
        model=model,
        device=device,
        metrics=metrics,
        argv=tuple(sys.argv),
    )
    code = _execute(config, quiet)
    click.echo(
        f"camscope demo: results in {Path(out).resolve()} (grid.png, <method>/, "
        f"predictions.csv, run.json{', report.html, report.md' if metrics else ''})"
    )
    sys.exit(code)


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@_config_flags("labels", "steps", "blur_deletion", "sanity_images", "device")
@click.option("--quiet", "-q", is_flag=True)
def evaluate(
    run_dir: str,
    labels: str | None,
    steps: int,
    blur_deletion: bool,
    sanity_images: int,
    device: str,
    quiet: bool,
) -> None:
    """Measure faithfulness of a finished run (made without --metrics) and write its report.

    The folder is checked first: every missing or damaged map is said on one line and left
    out (exit 1).
    """
    from camscope.io import runfolder
    from camscope.run import UsageError
    from camscope.run.evaluate import evaluate_folder

    stop = threading.Event()
    with _reporting(quiet), _sigint(stop):
        try:
            result = evaluate_folder(
                run_dir,
                steps=steps,
                blur_deletion=blur_deletion,
                labels=labels,
                device=device,
                sanity_images=sanity_images,
                stop=stop,
            )
        except UsageError as exc:
            sys.exit(_usage(str(exc)))
        except KeyboardInterrupt:
            click.echo(f"camscope: interrupted: {run_dir} not evaluated", err=True)
            sys.exit(EXIT_INTERRUPTED)
    if result.state == "interrupted":
        click.echo(f"camscope: interrupted: {run_dir} partly evaluated", err=True)
        sys.exit(EXIT_INTERRUPTED)
    if not quiet and runfolder.REPORT_HTML in result.files:
        click.echo(f"camscope: report -> {result.files[runfolder.REPORT_HTML]}", err=True)
    sys.exit(EXIT_FAILED if result.problems else EXIT_OK)


@main.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option(
    "--out",
    "-o",
    default=None,
    help="Where to write the report (default: the run folder when there is one).",
)
@click.option("--quiet", "-q", is_flag=True)
def report(run_dirs: tuple[str, ...], out: str | None, quiet: bool) -> None:
    """Build one summary and report from one or several run folders (e.g. shards)."""
    from camscope.io import runfolder
    from camscope.run.finalize import build_report

    if out is None and len(run_dirs) > 1:
        sys.exit(_usage("several run folders: say where the report goes with --out"))
    with _reporting(quiet):
        problems = []
        for run_dir in run_dirs:
            try:
                runfolder.read_run(run_dir)
            except runfolder.RunFolderError as exc:
                problems.append(str(exc))
        if problems:
            for line in problems:
                click.echo(f"camscope: error: {line}", err=True)
            sys.exit(EXIT_FAILED)
        target = Path(out or run_dirs[0])
        try:
            files = build_report([Path(d) for d in run_dirs], target)
        except (OSError, runfolder.RunFolderError) as exc:
            click.echo(f"camscope: error: {' '.join(str(exc).split())}", err=True)
            sys.exit(EXIT_FAILED)
    if not quiet:
        click.echo(f"camscope: report -> {files.get(runfolder.REPORT_HTML, target)}", err=True)


@main.command()
def methods() -> None:
    """List the CAM methods (name, family, label, cost, paper) from the registry."""
    from camscope.methods.registry import table

    rows = [("name", "family", "label", "cost", "paper")]
    rows += [(name, family, label, cost, paper) for name, family, label, paper, cost in table()]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        cells = [c.ljust(w) for c, w in zip(row[:4], widths, strict=True)]
        click.echo("  ".join([*cells, row[4]]))


@main.command()
@click.option("--model", default=None, help="Model (default: the default model).")
@click.option("--weights", type=click.Path(dir_okay=False), default=None)
@click.option("--usable", is_flag=True, help="Only the layers that can be CAM layers.")
def layers(model: str | None, weights: str | None, usable: bool) -> None:
    """List a model's layers with their output shapes; mark the default and the usable ones.

    One dry forward pass (hooks removed after). "yes" layers read as an (N, C, h, w) map
    (directly, channels-last or as ViT tokens) and are valid --layer values; "no" says why not.
    """
    from camscope.layers import probe_layers
    from camscope.models import ModelError, load_model

    try:
        # Shapes do not depend on the weights: random ones unless a file is given.
        loaded = load_model(model, weights=weights, pretrained=weights is not None)
        probes = probe_layers(loaded.model, loaded.input_size)
    except ModelError as exc:
        sys.exit(_usage(str(exc)))
    rows = [("LAYER", "TYPE", "OUTPUT", "CAM LAYER")]
    for p in probes:
        if usable and not p.usable:
            continue
        shape = "-" if p.shape is None else "(" + ", ".join(map(str, p.shape)) + ")"
        verdict = f"yes: {p.layout.describe()}" if p.layout is not None else f"no: {p.reason}"
        if p.name == loaded.default_layer:
            verdict += "   <- default"
        rows.append((p.name, p.type, shape, verdict))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    h, w = loaded.input_size
    click.echo(f"{loaded.name}: outputs for one {h}x{w} image; default {loaded.default_layer}")
    for row in rows:
        click.echo("  ".join(c.ljust(widths[i]) for i, c in enumerate(row[:3])) + "  " + row[3])


if __name__ == "__main__":  # pragma: no cover
    main()
