"""Stage 3, explain (compute only): maps, top-5 and per-image metrics of a batch.

`BatchExplainer` turns a batch of decoded images into results-table rows (schema in
`camscope.io.runfolder`) and the maps the writer saves. It never touches the disk. With
``--metrics`` each image's faithfulness metrics (Average Drop, Increase in Confidence,
Chattopadhyay et al. 2018; Deletion/Insertion, Petsiuk et al. 2018) are computed right after its
maps, while they are in memory, through one `InferenceEngine`; agreement between the methods
(Pearson r, top-20 % IoU) is computed for every batch (it is cheap).

Example::

    >>> explainer = BatchExplainer(ctx)                         # doctest: +SKIP
    >>> out = explainer(items, decoded)   # decoded: LoadedImage list  # doctest: +SKIP
    >>> out.rows[0]["method"], out.maps["gradcam"].shape       # doctest: +SKIP
    ('gradcam', (8, 224, 224))
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from camscope.engine import InferenceEngine
from camscope.errors import one_line
from camscope.io import LoadedImage
from camscope.io.boxes import box_masks, find_boxes, load_boxes
from camscope.metrics import (
    ROAD_FRACTIONS,
    auc,
    deletion_curve,
    energy_pointing_game,
    entropy,
    faithfulness,
    load_labels,
    lookup_label,
    pearson,
    pointing_game,
    relevance_mass,
    relevance_rank,
    removal_signature,
    road,
    sparseness,
    target_probabilities,
    top_iou,
    truth_from_filename,
)
from camscope.run import _methods
from camscope.run.collect import WorkItem
from camscope.run.config import RunContext

__all__ = [
    "METRICS_BATCH",
    "BatchExplainer",
    "BatchOutput",
    "MapRow",
    "failed_row",
    "make_explainer",
]

log = logging.getLogger("camscope")

#: Perturbed images per forward pass of the metrics.
METRICS_BATCH = 64


@dataclass(frozen=True)
class MapRow:
    """Whose map row ``r`` of `BatchOutput.maps` is: an image, and an object of it.

    Attributes:
        item: index into `BatchOutput.items` (and ``rgbs``).
        index: the object's index in its image (``object_index``); None: one map per image.
        box: (x1, y1, x2, y2) to draw on the overlay, in input pixels (detections).
        caption: the box's label and score.
    """

    item: int
    index: int | None = None
    box: tuple[float, float, float, float] | None = None
    caption: str = ""


@dataclass
class BatchOutput:
    """What one batch produced: table rows, maps per method (R, H, W) and the resized inputs.

    ``objects`` says whose each map row is (`MapRow`); None: one map per image (R = B).
    """

    items: list[WorkItem]
    rows: list[dict[str, Any]]
    maps: dict[str, np.ndarray] = field(default_factory=dict)
    rgbs: list[np.ndarray] = field(default_factory=list)
    objects: list[MapRow] | None = None

    def map_rows(self) -> list[MapRow]:
        """One `MapRow` per row of every method's maps."""
        if self.objects is not None:
            return self.objects
        return [MapRow(j) for j in range(len(self.items))]


NO_TRUTH = "--target truth: no true class (no ImageNet wnid in the file name, and not in --labels)"


def failed_row(item: WorkItem, error: str, settings_hash: str, method: str | None = None) -> dict:
    """The table row of an input (or of one method on it) that failed."""
    return {
        "key": item.key,
        "name": item.name,
        "file": item.file,
        "status": "failed",
        "error": error,
        "method": method,
        "settings_hash": settings_hash,
    }


class BatchExplainer:
    """Maps and per-image numbers for batches of images, with the run's methods and model.

    Args:
        ctx: a prepared run (`camscope.run.prepare`); its model, layer, methods, options,
            target and metric settings are used.
    """

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        model = ctx.loaded.model
        self.cams = {m: _methods.build(m, model, ctx.layer, ctx.options[m]) for m in ctx.methods}
        self.engine = InferenceEngine(model) if ctx.config.metrics else None
        self.seconds = dict.fromkeys(ctx.methods, 0.0)
        self.seconds["metrics"] = 0.0
        self.counters: dict[str, dict[str, float]] = {m: {} for m in ctx.methods}
        labels = ctx.config.labels
        self.labels = load_labels(labels) if labels else None
        boxes = getattr(ctx.config, "boxes", None)
        self.boxes = load_boxes(boxes) if boxes else None
        self._said_no_boxes = False

    def close(self) -> None:
        """Release the methods (their engines and graphs) and the metrics engine."""
        for cam in self.cams.values():
            cam.close()
        if self.engine is not None:
            self.engine.release()

    def notes(self) -> list[str]:
        """Substitutions the methods and engines made (each already logged)."""
        out: list[str] = []
        for cam in self.cams.values():
            out += [n for n in getattr(cam, "notes", []) if n not in out]
        if self.engine is not None and self.engine.note and self.engine.note not in out:
            out.append(self.engine.note)
        return out

    def _truth(self, item: WorkItem) -> int | None:
        if self.labels is not None:
            return lookup_label(self.labels, item.file, item.name)
        if len(self.ctx.loaded.categories) != 1000:
            return None
        truth = truth_from_filename(item.file)
        return truth if truth is not None else truth_from_filename(item.name)

    def _targets(self, items: list[WorkItem]) -> tuple[list[int], list[int | None] | int | None]:
        """Which items can be explained, and their targets (``--target truth``: per image)."""
        if self.ctx.target != "truth":
            return list(range(len(items))), self.ctx.target  # type: ignore[return-value]
        truths = [self._truth(item) for item in items]
        keep = [j for j, t in enumerate(truths) if t is not None]
        return keep, [truths[j] for j in keep]

    def _run_methods(
        self, x: torch.Tensor, items: list[WorkItem], targets: Any
    ) -> tuple[dict, list[dict]]:
        results, failed = {}, []
        self._batch_seconds: dict[str, float] = {}
        for method, cam in self.cams.items():
            start = time.perf_counter()
            try:
                results[method] = cam.explain(x, targets)
            except (RuntimeError, ValueError) as exc:
                failed += [
                    failed_row(it, one_line(exc), self.ctx.settings_hash, method) for it in items
                ]
                log.error("%s", f"{len(items)} image(s) [{method}]: {one_line(exc)}")
            if x.device.type == "cuda":
                torch.cuda.synchronize(x.device)
            self._batch_seconds[method] = time.perf_counter() - start
            self.seconds[method] += self._batch_seconds[method]
            for key, value in getattr(results.get(method), "info", {}).items():
                self.counters[method][key] = self.counters[method].get(key, 0.0) + value
        return results, failed

    def metrics(
        self,
        x: torch.Tensor,
        maps: dict[str, torch.Tensor],
        targets: torch.Tensor,
        keys: list[str] | None = None,
    ) -> dict[str, dict[str, torch.Tensor]]:
        """Faithfulness of each method's (B, H, W) maps of ``x`` (empty without --metrics).

        ``keys`` (the images' content keys) seed each image's ROAD noise, so its values do not
        depend on the batch it was in; every method of an image gets the same noise, so ROAD is
        measured once per distinct set of removal masks of an image (`_road_all`; the images a
        method took from another are counted in its ``road_reused_images``).
        """
        if self.engine is None or not maps:
            return {}
        start = time.perf_counter()
        cfg, loaded = self.ctx.config, self.ctx.loaded
        road_passes = 2 * len(ROAD_FRACTIONS) if cfg.road else 0
        blur_passes = cfg.steps if cfg.blur_deletion else 0  # its point 0 is the image's
        passes = len(x) * (2 * cfg.steps + 2 + road_passes + blur_passes) * len(maps)
        self.engine.prepare(x, expected_passes=passes)
        seeds = [int(k[:15], 16) for k in keys] if keys else list(range(len(x)))
        blur = cfg.blur_deletion
        base = target_probabilities(self.engine, x, targets, batch_size=METRICS_BATCH)
        roads, reused = _road_all(self.engine, x, maps, targets, seeds) if cfg.road else ({}, {})
        for method, count in reused.items():
            self.counters[method]["road_reused_images"] = (
                self.counters[method].get("road_reused_images", 0.0) + count
            )
        out = {}
        for method, m in maps.items():
            f = faithfulness(
                self.engine,
                x,
                m,
                targets,
                mean=loaded.mean,
                std=loaded.std,
                steps=cfg.steps,
                batch_size=METRICS_BATCH,
                base_prob=base,
            )
            out[method] = {
                "base_prob": f.base_prob,
                "explanation_prob": f.explanation_prob,
                "average_drop": f.average_drop,
                "increase": f.increase,
                "deletion_auc": f.deletion_auc,
                "insertion_auc": f.insertion_auc,
                "deletion_curve": f.deletion_curve,
                "insertion_curve": f.insertion_curve,
                **roads.get(method, {}),
                **(_blur_columns(self.engine, x, m, targets, cfg.steps, base) if blur else {}),
            }
        self.seconds["metrics"] += time.perf_counter() - start
        return out

    @staticmethod
    def _agreement(maps: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
        out: dict[str, dict[str, torch.Tensor]] = {m: {} for m in maps}
        for a, b in itertools.combinations(maps, 2):
            r, iou = pearson(maps[a], maps[b]), top_iou(maps[a], maps[b], fraction=0.2)
            out[a][f"pearson__{b}"], out[b][f"pearson__{a}"] = r, r
            out[a][f"top20_iou__{b}"], out[b][f"top20_iou__{a}"] = iou, iou
        return out

    def __call__(self, items: list[WorkItem], decoded: list[LoadedImage]) -> BatchOutput:
        """Rows and maps for a batch; ``decoded[i]`` is ``items[i]`` decoded (no errors)."""
        keep, targets = self._targets(items)
        no_truth = self._no_truth_rows(items, keep)
        items, decoded = [items[j] for j in keep], [decoded[j] for j in keep]
        if not items:
            return BatchOutput([], no_truth)
        x = torch.stack([d.tensor for d in decoded]).to(self.ctx.device)
        results, rows = self._run_methods(x, items, targets)
        out = BatchOutput(items, no_truth + rows, rgbs=[d.rgb for d in decoded])
        if not results:
            return out
        first = next(iter(results.values()))
        targets = first.targets
        maps = {m: r.maps.float() for m, r in results.items()}
        per_method = self.metrics(x, maps, targets, keys=[it.key for it in items])
        agree = self._agreement(maps)
        per_map = self.per_map(items, maps)
        probs = first.logits.float().softmax(dim=1)
        top = tuple(t.cpu() for t in probs.topk(5, dim=1))
        for method, result in results.items():
            extra = {**per_method.get(method, {}), **agree[method], **per_map[method]}
            out.rows.extend(
                self._method_rows(items, method, result, maps[method], targets, top, extra)
            )
            out.maps[method] = maps[method].detach().cpu().numpy().astype(np.float32, copy=False)
        return out

    def _regions(self, items: list[WorkItem], size: tuple[int, int]) -> torch.Tensor | None:
        """(B, H, W) bool ground truth from --boxes (all False without boxes), or None."""
        if self.boxes is None:
            return None
        found = [find_boxes(self.boxes, item.path) for item in items]
        missing = [
            it.file for it, f in zip(items, found, strict=True) if f is None or not len(f.boxes)
        ]
        if missing and not self._said_no_boxes:
            self._said_no_boxes = True
            log.warning(
                "%s",
                f"--boxes: no boxes for some images (first: {missing[0]}); they are left out of "
                "the localisation metrics",
            )
        sizes = [
            f.size if f is not None and f.size else _image_size(it.path)
            for it, f in zip(items, found, strict=True)
        ]
        masks = box_masks([f.boxes if f is not None else None for f in found], sizes, size)
        return torch.from_numpy(masks)

    def per_map(
        self, items: list[WorkItem], maps: dict[str, torch.Tensor]
    ) -> dict[str, dict[str, torch.Tensor]]:
        """Complexity of every map, and localisation against --boxes when given (no forwards).

        ``items`` are the maps' images (their paths find their boxes).
        """
        first = next(iter(maps.values()))
        regions = self._regions(items, tuple(first.shape[-2:]))
        out = {}
        for method, m in maps.items():
            cols = {"sparseness": sparseness(m), "entropy": entropy(m)}
            if regions is not None:
                r = regions.to(m.device)
                cols.update(
                    pointing_game=pointing_game(m, r),
                    energy_pointing_game=energy_pointing_game(m, r),
                    relevance_mass=relevance_mass(m, r),
                    relevance_rank=relevance_rank(m, r),
                )
            out[method] = cols
        return out

    def _no_truth_rows(self, items: list[WorkItem], keep: list[int]) -> list[dict]:
        """A failed row (logged as one line) for every item left out for want of a truth."""
        rows = [
            failed_row(items[j], NO_TRUTH, self.ctx.settings_hash)
            for j in range(len(items))
            if j not in keep
        ]
        for row in rows:
            log.error("%s", f"{row['file']}: {NO_TRUTH}")
        return rows

    def _method_rows(
        self,
        items: list[WorkItem],
        method: str,
        result: Any,
        maps: torch.Tensor,
        targets: torch.Tensor,
        top: tuple[torch.Tensor, ...],
        extra: dict[str, torch.Tensor],
    ) -> list[dict]:
        """One "ok" row per image of ``method``'s batch ``result``.

        ``maps`` are its (B, H, W) float maps, ``top`` the CPU (probabilities, indices) of the
        top-5 classes, ``extra`` its per-image metric and agreement columns.
        """
        top_p, top_i = top
        cats = self.ctx.loaded.categories
        cpu = {k: v.detach().cpu() for k, v in extra.items()}
        raw = result.raw.detach().float().cpu()
        share = (maps > 0.5).flatten(1).float().mean(dim=1).cpu()
        empty = result.empty.cpu()
        seconds = self._batch_seconds[method] / len(items)
        rows = []
        for j, item in enumerate(items):
            t, top1 = int(targets[j]), int(top_i[j, 0])
            row = {
                "key": item.key,
                "name": item.name,
                "file": item.file,
                "settings_hash": self.ctx.settings_hash,
                "status": "ok",
                "error": None,
                "method": method,
                "top1_index": top1,
                "target_index": t,
                "truth_index": self._truth(item),
                "top1_name": cats[top1],
                "target_name": cats[t] if t >= 0 else str(self.ctx.target),
                "top1_prob": float(top_p[j, 0]),
                "top5_index": top_i[j].tolist(),
                "top5_prob": top_p[j].tolist(),
                "empty": bool(empty[j]),
                "seconds": seconds,
                "raw": raw[j].flatten().tolist(),
                "raw_h": raw.shape[1],
                "raw_w": raw.shape[2],
                "share_above_half": float(share[j]),
            }
            row.update((key, _cell(value[j])) for key, value in cpu.items())
            rows.append(row)
        return rows


def make_explainer(ctx: RunContext) -> Any:
    """The run's compute stage: `BatchExplainer`, or a per-object task's `ObjectExplainer`."""
    if ctx.params is None:
        return BatchExplainer(ctx)
    from camscope.run.objects import ObjectExplainer

    return ObjectExplainer(ctx)


def _cell(value: torch.Tensor) -> Any:
    """A table cell from one image's CPU tensor: a list, a bool or a float (NaN: null)."""
    if value.dim():
        return value.tolist()
    if value.dtype == torch.bool:
        return bool(value)
    number = float(value)
    return None if math.isnan(number) else number


def _road_all(
    engine: InferenceEngine,
    x: torch.Tensor,
    maps: dict[str, torch.Tensor],
    targets: torch.Tensor,
    seeds: list[int],
) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, int]]:
    """`_road_columns` of every method's maps: (columns per method, images reused per method).

    ROAD sees a map only through its removal masks (`removal_signature`), and every method of
    an image gets the same noise and target: an image whose masks equal those another method's
    map of it already had (Grad-CAM, HiResCAM and XGrad-CAM before a global average pool, say)
    takes those values — the ones it would compute — so each distinct (image, masks) pays for
    its sparse solves once.
    """
    seen: dict[tuple[int, bytes], tuple[str, int]] = {}  # (image, masks) -> (method, image)
    out: dict[str, dict[str, torch.Tensor]] = {}
    reused: dict[str, int] = {}
    for method, m in maps.items():
        signature = removal_signature(m, ROAD_FRACTIONS).cpu().numpy()
        keys = [(j, r.tobytes()) for j, r in enumerate(signature)]  # all masks: exact
        new = [j for j, k in enumerate(keys) if k not in seen]
        cols = (
            _road_columns(engine, x[new], m[new], targets[new], [seeds[j] for j in new])
            if new
            else {}
        )
        rows = {j: (cols, i) for i, j in enumerate(new)}
        for j, k in enumerate(keys):
            if j not in rows:
                source, at = seen[k]
                rows[j] = (out[source], at)
        names = next(iter(rows.values()))[0].keys()
        out[method] = {n: torch.stack([rows[j][0][n][rows[j][1]] for j in range(len(keys))])
                       for n in names}  # fmt: skip
        seen.update((keys[j], (method, j)) for j in new)
        reused[method] = len(keys) - len(new)
    return out, reused


def _road_columns(
    engine: InferenceEngine,
    x: torch.Tensor,
    maps: torch.Tensor,
    targets: torch.Tensor,
    seeds: list[int],
) -> dict[str, torch.Tensor]:
    """ROAD (Rong et al. 2022) at the paper's fractions; each image's noise seeded by ``seeds``."""
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    r = road(engine, x, maps, targets, batch_size=METRICS_BATCH, generator=generators)
    return {
        "road_morf": r.morf_mean,
        "road_lerf": r.lerf_mean,
        "road_combined": r.combined,
        "road_morf_curve": r.morf,
        "road_lerf_curve": r.lerf,
    }


def _blur_columns(
    engine: InferenceEngine,
    x: torch.Tensor,
    maps: torch.Tensor,
    targets: torch.Tensor,
    steps: int,
    base: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """Deletion with the blurred baseline (--blur-deletion): ``steps`` passes per image."""
    curve = deletion_curve(
        engine, x, maps, targets, steps=steps, batch_size=METRICS_BATCH, base_prob=base,
        baseline="blur",
    )  # fmt: skip
    return {"deletion_blur_auc": auc(curve), "deletion_blur_curve": curve}


def _image_size(path: Any) -> tuple[int, int]:
    """(width, height) of an image file from its header (boxes are in its pixels)."""
    from PIL import Image

    with Image.open(path) as im:
        return int(im.size[0]), int(im.size[1])
