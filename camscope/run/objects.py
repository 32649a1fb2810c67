"""Stage 3 for per-object tasks (compute only): one map per object of an image per method.

`ObjectExplainer` is `BatchExplainer`'s counterpart for ``--task detect | segment | prompt``:
the run's task (`camscope.tasks.registry`) says which objects of an image there are and draws
their maps; this module turns them into results-table rows keyed by image x object x method
(``object``, ``object_index``) and the maps the writer saves. An image the task refuses (no
detection above the threshold, a class predicted nowhere) is one failed row, one line, and
nothing of it is written. With ``--metrics`` deletion/insertion measure the task's own score
(`Task.scorer`, through the batched `camscope.metrics.faithfulness` curves); the metrics that
only a classifier defines are said once and left empty.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import torch

from camscope.errors import one_line
from camscope.io import LoadedImage
from camscope.metrics import auc, deletion_curve, entropy, insertion_curve, sparseness
from camscope.metrics.faithfulness import target_probabilities
from camscope.run.collect import WorkItem
from camscope.run.config import RunContext
from camscope.run.explainer import (
    METRICS_BATCH,
    BatchExplainer,
    BatchOutput,
    MapRow,
    _cell,
    _image_size,
    failed_row,
)
from camscope.tasks.registry import ObjectInfo, ObjectMaps, TaskRefusal, get_task

__all__ = ["ObjectExplainer"]

log = logging.getLogger("camscope")


class ObjectExplainer:
    """Maps and rows of every object of each image, with the run's task, methods and model."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx, self.task = ctx, get_task(ctx.config.task)
        self.seconds = dict.fromkeys(ctx.methods, 0.0)
        self.seconds["metrics"] = 0.0
        self.counters: dict[str, dict[str, float]] = {m: {} for m in ctx.methods}
        self._notes: list[str] = []
        self._said: set[str] = set()
        if ctx.config.metrics:
            self._note(
                f"--metrics with --task {self.task.name}: deletion/insertion measure "
                f"{self.task.measured}; Average Drop, Increase in Confidence, ROAD and the sanity "
                "check are defined for classifiers only and are not measured"
            )

    def _note(self, line: str) -> None:
        if line not in self._notes:
            self._notes.append(line)
            log.warning("%s", line)

    def close(self) -> None:
        """Nothing to release (the methods are built per image: objects differ per image)."""

    def notes(self) -> list[str]:
        """What the run said once (metrics not defined, substitutions)."""
        return list(self._notes)

    def __call__(self, items: list[WorkItem], decoded: list[LoadedImage]) -> BatchOutput:
        """Rows and maps for a batch; ``decoded[i]`` is ``items[i]`` decoded (no errors)."""
        out = BatchOutput([], [], maps={m: [] for m in self.ctx.methods}, objects=[])  # type: ignore[arg-type]
        for item, image in zip(items, decoded, strict=True):
            try:
                found = self._explain(image.tensor[None].to(self.ctx.device))
            except (TaskRefusal, RuntimeError, ValueError) as exc:
                cause = one_line(exc)
                log.error("%s", f"{item.file}: {cause}")
                out.rows.append(failed_row(item, cause, self.ctx.settings_hash))
                continue
            self._add(out, item, image, found)
        out.maps = {
            m: np.concatenate(v) if v else np.zeros((0, 1, 1), np.float32)
            for m, v in out.maps.items()
        }
        return out

    def _explain(self, x: torch.Tensor) -> dict[str, ObjectMaps]:
        """Every method's maps of the image's objects (the first method finds the objects).

        The methods are built per image (the objects differ), so what they log is said once.
        """
        log.addFilter(self._once)
        try:
            return self._explain_methods(x)
        finally:
            log.removeFilter(self._once)

    def _once(self, record: logging.LogRecord) -> bool:
        """A logging filter: a warning already said in this run is not said again."""
        if record.levelno < logging.WARNING or record.levelno >= logging.ERROR:
            return True
        text = record.getMessage()
        if text in self._said:
            return False
        self._said.add(text)
        return True

    def _explain_methods(self, x: torch.Tensor) -> dict[str, ObjectMaps]:
        ctx, found, objects = self.ctx, {}, None
        self._image_seconds: dict[str, float] = {}
        for method in ctx.methods:
            start = time.perf_counter()
            r = self.task.explain(
                ctx.loaded, x, method, ctx.layer, ctx.options[method], ctx.params, objects
            )
            objects, found[method] = r.objects, r
            self._image_seconds[method] = time.perf_counter() - start
            self.seconds[method] += self._image_seconds[method]
            for note in r.notes:
                self._note(note)
        return found

    def _add(
        self, out: BatchOutput, item: WorkItem, image: LoadedImage, found: dict[str, ObjectMaps]
    ) -> None:
        """Append one image's rows, maps and map rows to ``out``."""
        j = len(out.items)
        out.items.append(item)
        out.rgbs.append(image.rgb)
        first = next(iter(found.values()))
        x = image.tensor[None].to(self.ctx.device)
        extra = self._columns(x, found)
        scale = _scale(item, image)
        for k, o in enumerate(first.objects):
            out.objects.append(MapRow(j, k, o.box, caption(o.name, o.score, o.box)))  # type: ignore[union-attr]
        for method, r in found.items():
            out.maps[method].append(r.maps.detach().float().cpu().numpy())  # type: ignore[union-attr]
            out.rows.extend(self._rows(item, method, r, extra[method], scale))

    def _columns(self, x: torch.Tensor, found: dict[str, ObjectMaps]) -> dict[str, dict]:
        """Per method: (K,) agreement, complexity and (with --metrics) deletion/insertion."""
        maps = {m: r.maps.float() for m, r in found.items()}
        agree = BatchExplainer._agreement(maps)
        cols = {
            m: {**agree[m], "sparseness": sparseness(v), "entropy": entropy(v)}
            for m, v in maps.items()
        }
        if self.ctx.config.metrics:
            start = time.perf_counter()
            measured = self._deletion_insertion(x, next(iter(found.values())).objects, maps)
            for m in cols:
                cols[m].update(measured.get(m, {}))
            self.seconds["metrics"] += time.perf_counter() - start
        return cols

    def _deletion_insertion(
        self, x: torch.Tensor, objects: list[ObjectInfo], maps: dict[str, torch.Tensor]
    ) -> dict[str, dict[str, torch.Tensor]]:
        """Deletion/insertion of each object's maps (every method at once) on its task score."""
        methods, steps = list(maps), self.ctx.config.steps
        per_object: list[dict[str, torch.Tensor]] = []
        for k, o in enumerate(objects):
            scorer = self.task.scorer(self.ctx.loaded, o, self.ctx.params)
            if scorer is None:
                self._note(
                    f"--metrics with --task {self.task.name}: deletion/insertion need a score "
                    "that depends on the image (two prompts or more); not measured"
                )
                return {}
            xs = x.expand(len(methods), -1, -1, -1)
            m = torch.stack([maps[name][k] for name in methods]).to(x.device)
            targets = torch.ones(len(methods), dtype=torch.long, device=x.device)
            base = target_probabilities(scorer, x, targets[:1], batch_size=1).expand(len(methods))
            kw = {"steps": steps, "batch_size": METRICS_BATCH, "base_prob": base}
            d = deletion_curve(scorer, xs, m, targets, **kw)
            i = insertion_curve(scorer, xs, m, targets, **kw)
            per_object.append(
                {"base_prob": base, "deletion_curve": d, "insertion_curve": i,
                 "deletion_auc": auc(d), "insertion_auc": auc(i)}
            )  # fmt: skip
        return {
            name: {c: torch.stack([p[c][n] for p in per_object]) for c in per_object[0]}
            for n, name in enumerate(methods)
        }

    def _rows(
        self,
        item: WorkItem,
        method: str,
        r: ObjectMaps,
        extra: dict[str, torch.Tensor],
        scale: tuple[float, float],
    ) -> list[dict]:
        """One "ok" row per object of ``method``'s maps ``r`` of ``item``."""
        raw = r.raw.detach().float().cpu()
        share = (r.maps > 0.5).flatten(1).float().mean(dim=1).cpu()
        cpu = {k: v.detach().cpu() for k, v in extra.items()}
        seconds = self._image_seconds[method] / max(1, len(r.objects))
        rows = []
        for k, o in enumerate(r.objects):
            row = {
                "key": item.key, "name": item.name, "file": item.file,
                "settings_hash": self.ctx.settings_hash, "status": "ok", "error": None,
                "method": method, "object": o.key, "object_index": k,
                "object_score": o.score, "explained_score": float(r.explained[k]),
                "box": None if o.box is None else _scaled(o.box, scale),
                "top1_index": o.label, "target_index": o.label, "truth_index": None,
                "top1_name": o.name, "target_name": o.name, "top1_prob": o.score,
                "empty": bool(r.empty[k]), "seconds": seconds,
                "raw": raw[k].flatten().tolist(), "raw_h": raw.shape[1], "raw_w": raw.shape[2],
                "share_above_half": float(share[k]),
            }  # fmt: skip
            row.update((c, _cell(v[k])) for c, v in cpu.items())
            rows.append(row)
        return rows


def caption(name: str, score: float | None, box: Any) -> str:
    """An object's caption on overlays and the grid: a detection's label and score, else name."""
    return f"{name} {score:.2f}" if box is not None and score is not None else name


def _scale(item: WorkItem, image: LoadedImage) -> tuple[float, float]:
    """(x, y) factors from input pixels to the original image's pixels."""
    try:
        width, height = _image_size(item.path)
    except (OSError, ValueError):
        return 1.0, 1.0
    return width / image.rgb.shape[1], height / image.rgb.shape[0]


def _scaled(box: Any, scale: tuple[float, float]) -> list[float]:
    sx, sy = scale
    return [float(box[0]) * sx, float(box[1]) * sy, float(box[2]) * sx, float(box[3]) * sy]
