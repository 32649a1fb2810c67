"""`explain`: the high-level call behind ``camscope run``.

Images are decoded and resized in background threads while the model works on batches; every
method runs on each batch; outputs are written atomically into the run folder (layout in
docs/DESIGN.md and the README). A bad input is reported on one line, recorded in ``run.json``
and skipped; the run goes on.
"""

from __future__ import annotations

import platform
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from camscope.io import (
    DEFAULT_MAX_PIXELS,
    collect_inputs,
    iter_images,
    save_npy,
    save_png,
    unique_names,
    write_csv,
    write_json,
)
from camscope.methods import METHODS, BaseCAM, CAMResult, ScoreCAM
from camscope.models import LoadedModel, load_model, one_line, parse_target, resolve_layer
from camscope.visualize import GridRow, overlay, save_grid

__all__ = ["DEFAULT_METHODS", "Failure", "RunResult", "UsageError", "explain", "pick_device"]

DEFAULT_METHODS = ("gradcam", "ablationcam", "scorecam")
GRID_ROWS_PER_FILE = 8


class UsageError(ValueError):
    """Arguments that prevent a run from starting (unknown method, unwritable folder, ...)."""


@dataclass
class Failure:
    """One input (or one method on one input) that failed, with a one-line cause."""

    file: str
    error: str
    method: str | None = None

    def line(self) -> str:
        where = f" [{self.method}]" if self.method else ""
        return f"{self.file}{where}: {self.error}"


@dataclass
class RunResult:
    """What `explain` did: the folder, counts, timings and failures."""

    out_dir: Path
    n_images: int
    methods: list[str]
    seconds_per_method: dict[str, float]
    failures: list[Failure] = field(default_factory=list)
    grids: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    model: LoadedModel | None = None

    @property
    def ok(self) -> bool:
        return not self.failures


def pick_device(device: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is a usage error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available (use --device cpu)")
    try:
        return torch.device(device)
    except RuntimeError as exc:
        raise UsageError(f"unknown device '{device}' (auto, cpu, cuda)") from exc


def _check_writable(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out_dir, prefix=".camscope-probe-"):
            pass
    except OSError as exc:
        raise UsageError(
            f"{out_dir}: output folder cannot be written ({exc.strerror or exc})"
        ) from exc


def _make_cam(
    method: str,
    loaded: LoadedModel,
    layer: str,
    *,
    scorecam_variant: str,
    precision: str,
    max_channels: int | None,
) -> BaseCAM:
    if method == "scorecam":
        return ScoreCAM(
            loaded.model,
            layer,
            variant=scorecam_variant,  # type: ignore[arg-type]
            precision=precision,  # type: ignore[arg-type]
            max_channels=max_channels,
        )
    return METHODS[method](loaded.model, layer)


def explain(
    inputs: Sequence[str | Path],
    out_dir: str | Path = "camscope-output",
    *,
    methods: Sequence[str] = DEFAULT_METHODS,
    model: str | LoadedModel | None = None,
    weights: str | Path | None = None,
    weights_tag: str | None = None,
    layer: str | None = None,
    target: str | int | None = None,
    device: str = "auto",
    batch_size: int = 8,
    scorecam_variant: str = "reference",
    precision: str = "fp32",
    max_channels: int | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    argv: Sequence[str] | None = None,
) -> RunResult:
    """Explain every image under ``inputs`` with each method and write the run folder.

    Args:
        inputs: image files, folders (searched recursively) or glob patterns.
        out_dir: run folder; ``<method>/<name>.png|.npy``, ``predictions.csv``, ``grid*.png``
            and ``run.json`` are written there.
        methods: any of ``gradcam``, ``ablationcam``, ``scorecam``.
        model: a model name (see `camscope.models.load_model`), an already `LoadedModel`, or
            None for the default.
        layer: target layer path (default: the model's conventional CAM layer).
        target: class index or name for every image (default: each image's top-1 class).
        device: ``auto``, ``cpu`` or ``cuda``.
        batch_size: images per batch.
        scorecam_variant, precision, max_channels: ScoreCAM options (see `ScoreCAM`).
        max_pixels: refuse images above this many pixels (decompression-bomb guard).
        progress: show a progress bar over images x methods on stderr.
        log: where one-line errors and warnings go (default: stderr).

    Raises:
        UsageError, camscope.models.ModelError, camscope.models.TargetError: before any work.
    """
    say = log or (lambda line: print(line, file=sys.stderr))
    methods = list(dict.fromkeys(methods))
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise UsageError(
            f"unknown method(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(METHODS)}"
        )
    if batch_size < 1:
        raise UsageError("--batch-size must be >= 1")
    if max_channels is not None and max_channels < 1:
        raise UsageError("--max-channels must be >= 1")
    if scorecam_variant not in ("reference", "pytorch-grad-cam"):
        raise UsageError(f"unknown ScoreCAM variant '{scorecam_variant}'")
    torch_device = pick_device(device)
    if precision not in ("fp32", "bf16", "fp16"):
        raise UsageError(f"unknown precision '{precision}' (fp32, bf16, fp16)")
    if precision == "fp16" and torch_device.type != "cuda":
        raise UsageError("--precision fp16 needs a CUDA device; use bf16 or fp32 on the CPU")
    out = Path(out_dir)
    _check_writable(out)

    loaded = (
        model
        if isinstance(model, LoadedModel)
        else load_model(model, weights=weights, weights_tag=weights_tag, device=torch_device)
    )
    loaded.model.to(torch_device)
    layer_name, _ = resolve_layer(loaded.model, layer or loaded.default_layer)
    target_index = None if target is None else parse_target(target, loaded.categories)

    paths, input_errors = collect_inputs(inputs)
    failures = [Failure(err.path, err.cause) for err in input_errors]
    for failure in failures:
        say(f"camscope: error: {failure.line()}")
    names = dict(zip(paths, unique_names(paths), strict=True))
    cams = {
        m: _make_cam(
            m,
            loaded,
            layer_name,
            scorecam_variant=scorecam_variant,
            precision=precision,
            max_channels=max_channels,
        )
        for m in methods
    }
    seconds = dict.fromkeys(methods, 0.0)
    counters: dict[str, dict[str, float]] = {m: {} for m in methods}
    predictions: list[list[object]] = []
    empty_maps: dict[str, list[str]] = {m: [] for m in methods}
    grid_rows: list[GridRow] = []
    grids: list[Path] = []
    n_done = 0

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(paths) * len(methods), unit="map", file=sys.stderr, dynamic_ncols=True)

    def flush_grid(final: bool = False) -> None:
        while len(grid_rows) >= GRID_ROWS_PER_FILE or (final and grid_rows):
            rows = grid_rows[:GRID_ROWS_PER_FILE]
            del grid_rows[:GRID_ROWS_PER_FILE]
            stem = "grid" if not grids else f"grid-{len(grids) + 1}"
            try:
                grids.extend(save_grid(out, rows, methods, rows_per_file=len(rows), stem=stem))
            except OSError as exc:
                failures.append(Failure(str(out / f"{stem}.png"), f"cannot write grid ({exc})"))

    def process(batch: list[tuple[Path, np.ndarray, torch.Tensor]]) -> None:
        nonlocal n_done
        x = torch.stack([t for _, _, t in batch]).to(torch_device)
        results: dict[str, CAMResult] = {}
        for method, cam in cams.items():
            start = time.perf_counter()
            try:
                results[method] = cam.explain(x, target_index)
            except (RuntimeError, ValueError) as exc:
                for path, _, _ in batch:
                    failures.append(Failure(str(path), one_line(exc), method))
                    say(f"camscope: error: {failures[-1].line()}")
            if torch_device.type == "cuda":
                torch.cuda.synchronize(torch_device)
            seconds[method] += time.perf_counter() - start
            if bar is not None:
                bar.update(len(batch))
        for method, result in results.items():
            for key, value in result.info.items():
                counters[method][key] = counters[method].get(key, 0.0) + value
        if not results:
            return
        first = next(iter(results.values()))
        probs = first.logits.softmax(dim=1).cpu()
        top_p, top_i = probs.topk(5, dim=1)
        targets = first.targets.cpu()
        maps = {m: r.maps.cpu().numpy().astype(np.float32) for m, r in results.items()}
        empty = {m: r.empty.cpu().numpy() for m, r in results.items()}
        for j, (path, rgb, _) in enumerate(batch):
            name = names[path]
            overlays: dict[str, np.ndarray | None] = {m: None for m in methods}
            notes: dict[str, str] = {}
            try:
                for method in results:
                    cam_map = maps[method][j]
                    save_npy(out / method / f"{name}.npy", cam_map)
                    image = overlay(rgb, cam_map)
                    save_png(out / method / f"{name}.png", image)
                    overlays[method] = image
                    if empty[method][j]:
                        empty_maps[method].append(name)
                        notes[method] = "empty map"
            except OSError as exc:
                failures.append(Failure(str(path), f"cannot write outputs ({exc})"))
                say(f"camscope: error: {failures[-1].line()}")
                continue
            t = int(targets[j])
            row: list[object] = [name, str(path)]
            for k in range(5):
                idx = int(top_i[j, k])
                row += [idx, loaded.categories[idx], f"{float(top_p[j, k]):.6f}"]
            row += [t, loaded.categories[t], loaded.name, layer_name]
            row.append(";".join(m for m in results if empty[m][j]))
            predictions.append(row)
            title = f"{loaded.categories[int(top_i[j, 0])]} (p={float(top_p[j, 0]):.2f})"
            if t != int(top_i[j, 0]):
                title += f", target {loaded.categories[t]}"
            grid_rows.append(
                GridRow(title=f"{name}: {title}", image=rgb, overlays=overlays, notes=notes)
            )
            n_done += 1
        flush_grid()

    batch: list[tuple[Path, np.ndarray, torch.Tensor]] = []
    try:
        for item in iter_images(
            paths,
            size=loaded.input_size,
            mean=loaded.mean,
            std=loaded.std,
            max_pixels=max_pixels,
        ):
            if item.error is not None:
                failures.append(Failure(item.error.path, item.error.cause))
                say(f"camscope: error: {failures[-1].line()}")
                if bar is not None:
                    bar.update(len(methods))
                continue
            batch.append((item.path, item.rgb, item.tensor))
            if len(batch) == batch_size:
                process(batch)
                batch = []
        if batch:
            process(batch)
        flush_grid(final=True)
    finally:
        if bar is not None:
            bar.close()
        for cam in cams.values():
            cam.close()

    notes = list(loaded.notes)
    for cam in cams.values():
        notes.extend(n for n in cam.notes if n not in notes)
    header = ["name", "file"]
    for k in range(1, 6):
        header += [f"top{k}_index", f"top{k}_name", f"top{k}_prob"]
    header += ["target_index", "target_name", "model", "layer", "empty_maps"]
    write_csv(out / "predictions.csv", header, predictions)
    write_json(
        out / "run.json",
        {
            "camscope_version": _version(),
            "torch_version": torch.__version__,
            "python_version": platform.python_version(),
            "model": loaded.name,
            "weights_source": loaded.weights_source,
            "weights_file": loaded.weights_file,
            "weights_tag": loaded.weights_tag,
            "layer": layer_name,
            "device": str(torch_device),
            "device_name": _device_name(torch_device),
            "threads": torch.get_num_threads(),
            "methods": methods,
            "target": target_index,
            "scorecam_variant": scorecam_variant,
            "precision": precision,
            "max_channels": max_channels,
            "scorecam_engine": cams["scorecam"].engine.kind  # type: ignore[attr-defined]
            if "scorecam" in cams and n_done
            else None,
            "batch_size": batch_size,
            "image_size": list(loaded.input_size),
            "mean": list(loaded.mean),
            "std": list(loaded.std),
            "n_inputs": len(paths),
            "n_images": n_done,
            "seconds_per_method": {m: round(s, 4) for m, s in seconds.items()},
            "seconds_per_image": {m: round(s / max(n_done, 1), 4) for m, s in seconds.items()},
            "method_counters": counters,
            "empty_maps": empty_maps,
            "failures": [{"file": f.file, "error": f.error, "method": f.method} for f in failures],
            "notes": notes,
            "grids": [g.name for g in grids],
            "argv": list(argv) if argv is not None else None,
        },
    )
    return RunResult(out, n_done, methods, seconds, failures, grids, notes, loaded)


def _version() -> str:
    from camscope._version import __version__

    return __version__


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine() or "cpu"
