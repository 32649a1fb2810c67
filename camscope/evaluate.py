"""Evaluate a run folder: faithfulness, agreement and sanity metrics, then the written report.

`evaluate_run` reads what `camscope.pipeline` wrote (``run.json``, ``predictions.csv``,
``<method>/<name>.npy``; layout in docs/DESIGN.md), reloads every image and the model, and
writes into the same folder:

- ``metrics.csv``    one row per image x method: probabilities, Average Drop, Increase,
                     Deletion/Insertion AUC, empty flag, share of pixels > 0.5, Pearson and
                     top-20% IoU with each other method, truth and correctness when known.
- ``agreement.csv``  image, method_a, method_b, pearson, top20_iou.
- ``summary.csv``    per method: n, mean and 95% CI of each metric, empty maps %, sanity result
                     (`camscope.report.summary_table`).
- ``sanity.csv``     per method x cascade step: randomised block, Spearman mean/min/max,
                     mean/max |Spearman|, per-image values.
- ``curves.npz``     ``<method>_deletion`` / ``<method>_insertion`` (N, S+1) curves, ``names``.
- ``curves.png``, ``distributions.png``, ``report.md``, ``report.html``.

Every file is written atomically (`camscope.io`).
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from camscope import io as imageio
from camscope import methods as cam_methods
from camscope.engine import InferenceEngine
from camscope.metrics import (
    DEFAULT_STEPS,
    Faithfulness,
    SanityStep,
    faithfulness,
    load_labels,
    lookup_label,
    pearson,
    sanity_check,
    target_probabilities,
    top_iou,
    truth_from_filename,
)
from camscope.report import (
    ImageEntry,
    ReportData,
    plot_curves,
    plot_distributions,
    summary_table,
    write_html,
    write_markdown,
)

__all__ = ["SANITY_SCORECAM_MAX_CHANNELS", "EvaluationResult", "evaluate_run"]

#: ScoreCAM in the sanity check scores only the 64 highest-variance channels (for speed; the
#: report says so). The cascade compares maps made with the same setting, so it stays fair.
SANITY_SCORECAM_MAX_CHANNELS = 64


@dataclass
class EvaluationResult:
    """What `evaluate_run` measured and wrote.

    faithfulness: method -> metrics over that method's evaluated images, whose positions in
        ``names`` are ``rows[method]``.
    agreement: (method_a, method_b) -> (pearson (n,), top20_iou (n,)) over ``pair_rows``.
    """

    run_dir: Path
    methods: list[str]
    names: list[str]
    faithfulness: dict[str, Faithfulness]
    rows: dict[str, list[int]]
    agreement: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]]
    pair_rows: dict[tuple[str, str], list[int]]
    sanity: dict[str, list[SanityStep]]
    report: ReportData
    files: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _log(progress: bool, text: str) -> None:
    if progress:
        print(f"[evaluate] {text}", file=sys.stderr, flush=True)


def _image_path(run_dir: Path, file: str) -> Path:
    """predictions.csv's ``file`` as written, else relative to the run folder."""
    path = Path(file)
    if path.exists() or path.is_absolute():
        return path
    return run_dir / path


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except ValueError:
        return None


def _float(value: str | None) -> float:
    try:
        return float(value) if value not in (None, "") else math.nan
    except ValueError:
        return math.nan


def _explain_fn(method: str, layer: str, run: dict[str, Any]):
    """``explain_fn(model, inputs, targets) -> maps`` for the sanity check."""
    kwargs: dict[str, Any] = {}
    if method == "scorecam":
        kwargs = {
            "variant": run.get("scorecam_variant") or "reference",
            "max_channels": SANITY_SCORECAM_MAX_CHANNELS,
        }

    def explain(model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor):
        with cam_methods.METHODS[method](model, layer, **kwargs) as cam:
            return cam(inputs, targets)

    return explain


def evaluate_run(
    run_dir: str | Path,
    *,
    steps: int = DEFAULT_STEPS,
    batch_size: int = 64,
    labels: str | Path | None = None,
    sanity_images: int = 8,
    device: str | torch.device = "cpu",
    loaded_model: Any = None,
    progress: bool = False,
) -> EvaluationResult:
    """Measure every map of a run folder and write the comparative report next to it.

    Args:
        run_dir: a folder written by `camscope.pipeline` (run.json, predictions.csv, maps).
        steps: deletion/insertion steps (`camscope.metrics.DEFAULT_STEPS`).
        batch_size: images per forward pass.
        labels: CSV of ground truth (`camscope.metrics.load_labels`); without it the truth is
            read from an ImageNet wnid in the file name where there is one.
        sanity_images: the cascading randomisation check runs on the first this-many images
            per method (0 skips it).
        device: where the model and tensors go.
        loaded_model: a `camscope.models.LoadedModel` to use instead of loading run.json's.
        progress: say what is being done on stderr.

    Images that cannot be loaded and maps that are missing or of the wrong shape are skipped
    and listed in the notes (stderr when ``progress``, the reports always).
    """
    run_dir = Path(run_dir)
    run: dict[str, Any] = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    with (run_dir / "predictions.csv").open(newline="", encoding="utf-8") as fh:
        predictions = list(csv.DictReader(fh))
    methods = [str(m) for m in run.get("methods", [])]
    size = tuple(int(v) for v in run.get("image_size", (224, 224)))
    notes: list[str] = []
    device = torch.device(device)

    if loaded_model is None:
        from camscope.models import load_model

        _log(progress, f"loading model {run.get('model')}")
        loaded_model = load_model(
            run.get("model"),
            weights=run.get("weights_file"),
            weights_tag=run.get("weights_tag"),
            device=device,
        )
    model = loaded_model.model
    mean, std = tuple(loaded_model.mean), tuple(loaded_model.std)
    categories = list(loaded_model.categories)
    layer = str(run.get("layer") or loaded_model.default_layer)
    truth_table = load_labels(labels) if labels is not None else None

    # ---- images
    entries: list[ImageEntry] = []
    tensors: list[torch.Tensor] = []
    for row in predictions:
        name, file = row.get("name", ""), row.get("file", "")
        try:
            rgb, tensor = imageio.preprocess(
                imageio.load_image(_image_path(run_dir, file)), size=size, mean=mean, std=std
            )
        except Exception as exc:  # noqa: BLE001 - any unreadable image is skipped, said why
            notes.append(f"{name}: image not evaluated ({type(exc).__name__}: {exc})")
            continue
        truth = _truth(file, name, truth_table, len(categories))
        top1 = _int(row.get("top1_index"))
        target = _int(row.get("target_index"))
        top1 = target if top1 is None else top1
        if target is None:
            notes.append(f"{name}: no target_index in predictions.csv; not evaluated")
            continue
        entries.append(
            ImageEntry(
                name=name,
                file=file,
                target_index=target,
                target_name=row.get("target_name") or _category(categories, target),
                top1_index=top1,  # type: ignore[arg-type]
                top1_name=row.get("top1_name") or _category(categories, top1),
                top1_prob=_float(row.get("top1_prob")),
                truth_index=truth,
                truth_name=None if truth is None else _category(categories, truth),
                rgb=rgb,
                overlays={m: run_dir / m / f"{name}.png" for m in methods},
            )
        )
        tensors.append(tensor)
    if not entries:
        raise ValueError(f"{run_dir}: no image of predictions.csv could be evaluated")
    names = [e.name for e in entries]
    n = len(entries)
    inputs = torch.stack(tensors).to(device)
    targets = torch.tensor([e.target_index for e in entries], dtype=torch.long, device=device)
    _log(progress, f"{n} images, methods {', '.join(methods)}")

    # ---- maps
    maps: dict[str, torch.Tensor] = {}
    rows: dict[str, list[int]] = {}
    for m in methods:
        found, idx = [], []
        for i, name in enumerate(names):
            path = run_dir / m / f"{name}.npy"
            try:
                arr = np.load(path, allow_pickle=False)
            except (OSError, ValueError) as exc:
                notes.append(f"{name}: {m} map not evaluated ({type(exc).__name__}: {exc})")
                continue
            if arr.shape != size:
                notes.append(f"{name}: {m} map has shape {arr.shape}, expected {size}; skipped")
                continue
            found.append(torch.from_numpy(np.asarray(arr, dtype=np.float32)))
            idx.append(i)
        rows[m] = idx
        maps[m] = (
            torch.stack(found).to(device)
            if found
            else torch.empty(0, *size, dtype=torch.float32, device=device)
        )

    # ---- faithfulness (p_c(x) once for all methods)
    t_start = t0 = time.perf_counter()
    seconds: dict[str, float] = {}
    # thousands of perturbed inputs: the fastest exact inference path for the device
    engine = InferenceEngine(model)
    engine.prepare(inputs[: min(batch_size, n)], expected_passes=n * (2 * steps + 2))
    base = target_probabilities(engine, inputs, targets, batch_size=batch_size)
    results: dict[str, Faithfulness] = {}
    for m in methods:
        idx = torch.tensor(rows[m], dtype=torch.long, device=device)
        if not len(idx):
            continue
        _log(progress, f"faithfulness of {m} on {len(idx)} images ({steps} steps)")
        results[m] = faithfulness(
            engine,
            inputs[idx],
            maps[m],
            targets[idx],
            mean=mean,
            std=std,
            steps=steps,
            batch_size=batch_size,
            base_prob=base[idx],
        )
    seconds["faithfulness"] = time.perf_counter() - t0
    engine.release()  # free its compiled copy and memory arena before the sanity check
    _log(progress, f"faithfulness done in {seconds['faithfulness']:.1f} s ({engine.kind})")

    values = {m: _values(n, rows[m], maps[m], results.get(m)) for m in methods}

    # ---- agreement
    agreement: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]] = {}
    pair_rows: dict[tuple[str, str], list[int]] = {}
    report_agreement: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    for a, b in itertools.combinations(methods, 2):
        common = sorted(set(rows[a]) & set(rows[b]))
        pos_a = {i: k for k, i in enumerate(rows[a])}
        pos_b = {i: k for k, i in enumerate(rows[b])}
        ia = torch.tensor([pos_a[i] for i in common], dtype=torch.long, device=device)
        ib = torch.tensor([pos_b[i] for i in common], dtype=torch.long, device=device)
        r = pearson(maps[a][ia], maps[b][ib])
        iou = top_iou(maps[a][ia], maps[b][ib], fraction=0.2)
        agreement[(a, b)], pair_rows[(a, b)] = (r, iou), common
        report_agreement[(a, b)] = {
            "pearson": _scatter(n, common, r),
            "top20_iou": _scatter(n, common, iou),
        }

    # ---- sanity check
    sanity: dict[str, list[SanityStep]] = {}
    sanity_notes: list[str] = []
    k = min(sanity_images, n)
    if k > 0:
        for m in methods:
            _log(progress, f"sanity check of {m} on {k} images")
            t0 = time.perf_counter()
            try:
                sanity[m] = sanity_check(model, _explain_fn(m, layer, run), inputs[:k], targets[:k])
            except Exception as exc:  # noqa: BLE001 - report the failure, keep the metrics
                notes.append(f"sanity check of {m} failed: {type(exc).__name__}: {exc}")
                continue
            seconds[f"sanity_{m}"] = time.perf_counter() - t0
            _log(progress, f"sanity check of {m} done in {seconds[f'sanity_{m}']:.1f} s")
        if "scorecam" in sanity:
            sanity_notes.append(
                f"ScoreCAM in the sanity check scores only its {SANITY_SCORECAM_MAX_CHANNELS} "
                "highest-variance channels (max_channels) for speed, for the trained and the "
                "randomised model alike."
            )

    data = ReportData(
        title=f"camscope evaluation: {run.get('model', '?')} at {layer}",
        run=run,
        methods=methods,
        images=entries,
        values=values,
        agreement=report_agreement,
        steps=steps,
        sanity=sanity,
        sanity_images=k,
        sanity_notes=sanity_notes,
        notes=notes,
    )
    for note in notes:
        _log(progress, note)
    files = _write_outputs(run_dir, data, results, rows, agreement, pair_rows, names)
    seconds["total"] = time.perf_counter() - t_start
    files["evaluation.json"] = run_dir / "evaluation.json"
    imageio.write_json(
        files["evaluation.json"],
        {
            "images": n,
            "methods": methods,
            "steps": steps,
            "batch_size": batch_size,
            "sanity_images": k,
            "sanity_scorecam_max_channels": SANITY_SCORECAM_MAX_CHANNELS,
            "engine": engine.kind,
            "engine_note": engine.note or None,
            "threads": torch.get_num_threads(),
            "device": str(device),
            "seconds": {key: round(v, 2) for key, v in seconds.items()},
            "notes": notes,
        },
    )
    _log(progress, f"wrote {', '.join(p.name for p in files.values())}")
    return EvaluationResult(
        run_dir=run_dir,
        methods=methods,
        names=names,
        faithfulness=results,
        rows=rows,
        agreement=agreement,
        pair_rows=pair_rows,
        sanity=sanity,
        report=data,
        files=files,
        notes=notes,
    )


def _category(categories: list[str], index: int | None) -> str:
    if index is None:
        return "?"
    return categories[index] if 0 <= index < len(categories) else f"class {index}"


def _truth(file: str, name: str, table: dict[str, int] | None, n_classes: int) -> int | None:
    """Ground truth from the labels CSV, else from an ImageNet wnid in the file name."""
    if table is not None:
        return lookup_label(table, file, name)
    if n_classes != 1000:  # a wnid names an ImageNet-1k class only
        return None
    truth = truth_from_filename(file)
    return truth if truth is not None else truth_from_filename(name)


def _scatter(n: int, rows: list[int], values: torch.Tensor) -> np.ndarray:
    """(n,) float64 with ``values`` at ``rows`` and NaN elsewhere."""
    out = np.full(n, np.nan)
    out[rows] = values.detach().double().cpu().numpy()
    return out


_VALUE_KEYS = (
    "average_drop",
    "increase",
    "deletion_auc",
    "insertion_auc",
    "empty",
    "share_above_half",
    "base_prob",
    "explanation_prob",
)


def _values(
    n: int, rows: list[int], maps: torch.Tensor, f: Faithfulness | None
) -> dict[str, np.ndarray]:
    """Per-image values of one method for the report (NaN where it has no map)."""
    if f is None:
        return {k: np.full(n, np.nan) for k in _VALUE_KEYS}
    return {
        "average_drop": _scatter(n, rows, f.average_drop),
        "increase": _scatter(n, rows, f.increase.float()),
        "deletion_auc": _scatter(n, rows, f.deletion_auc),
        "insertion_auc": _scatter(n, rows, f.insertion_auc),
        "empty": _scatter(n, rows, (maps.flatten(1).amax(dim=1) <= 0).float()),
        "share_above_half": _scatter(n, rows, (maps > 0.5).flatten(1).float().mean(dim=1)),
        "base_prob": _scatter(n, rows, f.base_prob),
        "explanation_prob": _scatter(n, rows, f.explanation_prob),
    }


def _cell(x: float, digits: int = 6) -> str:
    return "" if not math.isfinite(x) else f"{x:.{digits}g}"


def _write_outputs(
    run_dir: Path,
    data: ReportData,
    results: dict[str, Faithfulness],
    rows: dict[str, list[int]],
    agreement: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]],
    pair_rows: dict[tuple[str, str], list[int]],
    names: list[str],
) -> dict[str, Path]:
    files = {k: run_dir / k for k in ("metrics.csv", "agreement.csv", "summary.csv")}
    files.update({k: run_dir / k for k in ("sanity.csv", "curves.npz", "curves.png")})
    files.update({k: run_dir / k for k in ("distributions.png", "report.md", "report.html")})
    methods = data.methods

    header = ["image", "file", "method", "target_index", "target_name", "top1_index"]
    header += ["truth_index", "correct", "empty", "share_above_half", "base_prob"]
    header += ["explanation_prob", "average_drop_pct", "increase", "deletion_auc"]
    header += ["insertion_auc"]
    for m in methods:
        header += [f"pearson_{m}", f"top20_iou_{m}"]
    metric_rows = []
    for i, img in enumerate(data.images):
        for m in methods:
            v = data.values[m]
            if not math.isfinite(v["deletion_auc"][i]):
                continue
            correct = "" if img.correct is None else int(img.correct)
            row: list[object] = [img.name, img.file, m, img.target_index, img.target_name]
            row += [img.top1_index, "" if img.truth_index is None else img.truth_index, correct]
            row += [int(v["empty"][i]), _cell(v["share_above_half"][i]), _cell(v["base_prob"][i])]
            row += [_cell(v["explanation_prob"][i]), _cell(100 * v["average_drop"][i])]
            row += [int(v["increase"][i]), _cell(v["deletion_auc"][i])]
            row += [_cell(v["insertion_auc"][i])]
            for o in methods:
                if o == m:
                    row += ["", ""]
                    continue
                pair = (m, o) if (m, o) in data.agreement else (o, m)
                row += [_cell(data.agreement[pair][k][i]) for k in ("pearson", "top20_iou")]
            metric_rows.append(row)
    imageio.write_csv(files["metrics.csv"], header, metric_rows)

    agree_rows = []
    for (a, b), (r, iou) in agreement.items():
        for k, i in enumerate(pair_rows[(a, b)]):
            agree_rows.append([names[i], a, b, _cell(float(r[k])), _cell(float(iou[k]))])
    imageio.write_csv(
        files["agreement.csv"],
        ["image", "method_a", "method_b", "pearson", "top20_iou"],
        agree_rows,
    )

    imageio.write_csv(files["summary.csv"], *summary_table(data))

    sanity_header = ["method", "step", "block", "n_images", "mean_spearman", "min_spearman"]
    sanity_header += ["max_spearman", "mean_abs_spearman", "max_abs_spearman"]
    sanity_header += ["params_reset", "params_in_block", "per_image_spearman"]
    sanity_rows = []
    for m, steps in data.sanity.items():
        for k, s in enumerate(steps, 1):
            sanity_rows.append(
                [m, k, s.block, len(s.spearman), _cell(s.mean), _cell(s.min), _cell(s.max)]
                + [_cell(s.mean_abs), _cell(s.max_abs), s.n_reset, s.n_params]
                + [";".join(f"{x:.4f}" for x in s.spearman.tolist())]
            )
    imageio.write_csv(files["sanity.csv"], sanity_header, sanity_rows)

    arrays: dict[str, np.ndarray] = {"names": np.array(names), "steps": np.array(data.steps)}
    for m, f in results.items():
        arrays[f"{m}_deletion"] = f.deletion_curve.cpu().numpy()
        arrays[f"{m}_insertion"] = f.insertion_curve.cpu().numpy()
        arrays[f"{m}_rows"] = np.array(rows[m], dtype=np.int64)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    imageio.atomic_write_bytes(files["curves.npz"], buffer.getvalue())

    curves = {
        m: (f.deletion_curve.cpu().numpy(), f.insertion_curve.cpu().numpy())
        for m, f in results.items()
    }
    imageio.save_figure(files["curves.png"], plot_curves(curves))
    imageio.save_figure(files["distributions.png"], plot_distributions(data.values))
    data.plots = {
        "Mean deletion and insertion curves": files["curves.png"],
        "Per-image distributions": files["distributions.png"],
    }
    write_markdown(files["report.md"], data)
    write_html(files["report.html"], data)
    return files
