"""Command line: ``camscope run``, ``camscope demo``, ``camscope evaluate``, ``camscope layers``.

Exit codes: 0 all done, 1 some inputs failed (each listed at the end), 2 usage error (unknown
method, model, layer or class; unavailable weights; unwritable output folder).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import click

from camscope.io import DEFAULT_MAX_PIXELS
from camscope.models import ModelError, TargetError
from camscope.pipeline import DEFAULT_METHODS, RunResult, UsageError, explain

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

DEMO_IMAGES = {
    "cat": "chelsea",
    "coffee": "coffee",
    "astronaut": "astronaut",
    "rocket": "rocket",
    "motorcycle": "stereo_motorcycle",
}


def _fail_usage(message: str) -> None:
    click.echo(f"camscope: error: {message}", err=True)
    sys.exit(EXIT_USAGE)


def _methods(value: str) -> list[str]:
    return [m.strip().lower().replace("-", "") for m in value.split(",") if m.strip()]


def _report(result: RunResult, quiet: bool) -> int:
    if not quiet:
        per_image = ", ".join(
            f"{m} {s / max(result.n_images, 1):.2f} s/image"
            for m, s in result.seconds_per_method.items()
        )
        click.echo(f"camscope: {result.n_images} image(s) explained -> {result.out_dir}", err=True)
        if result.n_images:
            click.echo(f"camscope: {per_image}", err=True)
    if result.failures:
        click.echo(f"camscope: {len(result.failures)} failure(s):", err=True)
        for failure in result.failures:
            click.echo(f"  {failure.line()}", err=True)
        return EXIT_FAILED
    return EXIT_OK


def _run(
    inputs: Sequence[str],
    out: str,
    quiet: bool,
    metrics: bool,
    labels: str | None,
    steps: int | None,
    **kwargs: object,
) -> int:
    try:
        result = explain(
            inputs,
            out,
            progress=not quiet and sys.stderr.isatty(),
            argv=sys.argv,
            **kwargs,  # type: ignore[arg-type]
        )
    except (UsageError, ModelError, TargetError) as exc:
        _fail_usage(str(exc))
        return EXIT_USAGE
    code = _report(result, quiet)
    if metrics and result.n_images:
        from camscope.evaluate import evaluate_run

        evaluate_kwargs: dict[str, object] = {"labels": Path(labels) if labels else None}
        if steps is not None:
            evaluate_kwargs["steps"] = steps
        evaluate_run(
            Path(out),
            device=str(kwargs.get("device", "cpu")).replace("auto", _auto_device()),
            progress=not quiet and sys.stderr.isatty(),
            loaded_model=result.model,
            **evaluate_kwargs,  # type: ignore[arg-type]
        )
        if not quiet:
            click.echo(f"camscope: metrics and report -> {Path(out) / 'report.html'}", err=True)
    return code


def _auto_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


_common_options = [
    click.option(
        "--out", "-o", default="camscope-output", show_default=True, help="Output folder."
    ),
    click.option(
        "--methods",
        "-m",
        default=",".join(DEFAULT_METHODS),
        show_default=True,
        help="Comma-separated CAM methods.",
    ),
    click.option(
        "--model",
        default=None,
        help="resnet50 (default when its weights can be had), efficientnet_lite0 "
        "(bundled, offline), or any torchvision/timm classifier.",
    ),
    click.option(
        "--weights",
        type=click.Path(dir_okay=False),
        default=None,
        help="Local state dict (.pth/.safetensors) instead of downloading.",
    ),
    click.option(
        "--weights-tag",
        default=None,
        help="torchvision weights tag (default IMAGENET1K_V1 for resnet50).",
    ),
    click.option(
        "--layer",
        default=None,
        help="Target layer, e.g. 'layer4[-1]', 'layer4.2', 'layer3' (default per model).",
    ),
    click.option(
        "--target",
        default=None,
        help="Class index or name for every image (default: top-1 prediction).",
    ),
    click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda."),
    click.option(
        "--batch-size", "-b", default=8, show_default=True, type=int, help="Images per batch."
    ),
    click.option(
        "--scorecam-variant",
        type=click.Choice(["reference", "pytorch-grad-cam"]),
        default="reference",
        show_default=True,
        help="ScoreCAM weights: the authors' (softmax over classes) or "
        "pytorch-grad-cam's (softmax over channels).",
    ),
    click.option(
        "--precision",
        type=click.Choice(["fp32", "bf16", "fp16"]),
        default="fp32",
        show_default=True,
        help="ScoreCAM masked passes: exact fp32 or autocast.",
    ),
    click.option(
        "--max-channels",
        type=int,
        default=None,
        help="ScoreCAM: score only the K highest-variance channels.",
    ),
    click.option(
        "--max-pixels",
        type=int,
        default=DEFAULT_MAX_PIXELS,
        show_default=True,
        help="Refuse images with more pixels than this.",
    ),
    click.option(
        "--metrics",
        is_flag=True,
        help="Also measure faithfulness and write metrics.csv, summary.csv, "
        "report.html and report.md.",
    ),
    click.option(
        "--labels",
        type=click.Path(dir_okay=False, exists=True),
        default=None,
        help="CSV with file and class columns (true labels for accuracy).",
    ),
    click.option(
        "--steps",
        type=int,
        default=None,
        help="Deletion/insertion steps (default: camscope.metrics.DEFAULT_STEPS).",
    ),
    click.option("--quiet", "-q", is_flag=True, help="No progress bar or summary."),
]


def _add_options(func):  # type: ignore[no-untyped-def]
    for option in reversed(_common_options):
        func = option(func)
    return func


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="camscope")
def main() -> None:
    """camscope: class activation maps (Grad-CAM, AblationCAM, ScoreCAM), measured."""


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@_add_options
def run(
    inputs: tuple[str, ...],
    out: str,
    methods: str,
    quiet: bool,
    metrics: bool,
    labels: str | None,
    steps: int | None,
    **kwargs: object,
) -> None:
    """Explain INPUTS (image files, folders searched recursively, or globs)."""
    sys.exit(_run(inputs, out, quiet, metrics, labels, steps, methods=_methods(methods), **kwargs))


@main.command()
@click.option("--out", "-o", default="camscope-demo", show_default=True, help="Output folder.")
@click.option("--model", default=None, help="Model (default: the default model).")
@click.option("--device", default="auto", show_default=True)
@click.option(
    "--metrics/--no-metrics",
    default=False,
    show_default=True,
    help="Also measure faithfulness and write the report.",
)
@click.option("--quiet", "-q", is_flag=True)
def demo(out: str, model: str | None, device: str, metrics: bool, quiet: bool) -> None:
    """Run all three methods on scikit-image's sample photos, offline."""
    import skimage.data

    from camscope.io import save_png

    inputs_dir = Path(out) / "inputs"
    try:
        for name, loader in DEMO_IMAGES.items():
            image = getattr(skimage.data, loader)()
            image = image[0] if isinstance(image, tuple) else image
            save_png(inputs_dir / f"{name}.png", image)
    except OSError as exc:
        _fail_usage(f"{out}: cannot write demo inputs ({exc})")
    code = _run(
        [str(inputs_dir)],
        out,
        quiet,
        metrics,
        None,
        None,
        methods=list(DEFAULT_METHODS),
        model=model,
        device=device,
    )
    click.echo(
        f"camscope demo: results in {Path(out).resolve()} "
        f"(grid.png, <method>/, predictions.csv, run.json"
        f"{', report.html, report.md' if metrics else ''})"
    )
    sys.exit(code)


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True))
@click.option("--labels", type=click.Path(dir_okay=False, exists=True), default=None)
@click.option("--steps", type=int, default=None)
@click.option("--device", default="auto", show_default=True)
@click.option("--quiet", "-q", is_flag=True)
def evaluate(run_dir: str, labels: str | None, steps: int | None, device: str, quiet: bool) -> None:
    """Measure faithfulness of a finished run and write its report."""
    from camscope.evaluate import evaluate_run

    kwargs: dict[str, object] = {"labels": Path(labels) if labels else None}
    if steps is not None:
        kwargs["steps"] = steps
    try:
        evaluate_run(
            Path(run_dir),
            device=device.replace("auto", _auto_device()),
            progress=not quiet and sys.stderr.isatty(),
            **kwargs,
        )  # type: ignore[arg-type]
    except (FileNotFoundError, ModelError, ValueError) as exc:
        _fail_usage(f"{run_dir}: {exc}")
    if not quiet:
        click.echo(f"camscope: report -> {Path(run_dir) / 'report.html'}", err=True)


@main.command()
@click.option("--model", default=None)
@click.option("--weights", type=click.Path(dir_okay=False), default=None)
def layers(model: str | None, weights: str | None) -> None:
    """List a model's layers (valid --layer values) and its default layer."""
    from camscope.models import list_layers, load_model

    try:
        loaded = load_model(model, weights=weights)
    except ModelError as exc:
        _fail_usage(str(exc))
        return
    for name in list_layers(loaded.model):
        click.echo(name + ("   <- default" if name == loaded.default_layer else ""))


if __name__ == "__main__":  # pragma: no cover
    main()
