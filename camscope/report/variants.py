"""Other settings of a metric, derived from the curves a run stores (no forward pass).

A run with --metrics keeps every image's full deletion / insertion curve (steps + 1 points) and,
with ROAD, its per-fraction MoRF / LeRF curves. From these the report derives, per image:

- deletion (either baseline) / insertion AUC at half and a quarter of the run's step count:
  every 2nd / 4th point of the stored curve. That is exactly the curve the coarser step count
  measures only when its pixel counts per step are every 2nd / 4th of the run's
  (`camscope.metrics.faithfulness`'s ``_pixel_counts``: true when H×W is a multiple of the step
  count, as 224×224 is for 32 steps); otherwise the variant is not derived.
- ROAD MoRF / LeRF / combined over the first and the last half of the removed fractions (10–50 %
  and 50–90 % of the nine 10 %, ..., 90 %), besides all of them.

Each variant is one `MetricSpec` in `VARIANTS` whose ``derive`` (a `Derivation`) says how:
`derive_settings` streams the curve columns once (one part file at a time) and adds each
variant's per-image values to `Scalars` beside its metric's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from camscope.metrics.faithfulness import _pixel_counts
from camscope.report.data import METRICS, Derivation, MetricSpec, Scalars, Setting
from camscope.report.source import RunTable

__all__ = ["VARIANTS", "CurveFacts", "curve_facts", "derive_settings", "trapezoid"]


@dataclass(frozen=True)
class CurveFacts:
    """What the stored curves were measured with, from run.json (None: unknown or differing).

    steps: deletion / insertion steps. image_size: (H, W) of the model's input, the image the
    pixels are removed from. fractions: ROAD's removed fractions, in curve order.
    """

    steps: int | None = None
    image_size: tuple[int, int] | None = None
    fractions: tuple[float, ...] | None = None


def _common(values: list) -> object:
    """The one value every run folder agrees on, else None (a merged report of other settings)."""
    distinct = {repr(v) for v in values}
    return values[0] if values and len(distinct) == 1 and values[0] is not None else None


def curve_facts(settings: Sequence[Mapping]) -> CurveFacts:
    """`CurveFacts` common to the run folders' settings (run.json ``settings``)."""
    steps = _common([s.get("steps") for s in settings])
    size = _common([s.get("image_size") for s in settings])
    road = [s.get("road") if isinstance(s.get("road"), dict) else {} for s in settings]
    fractions = _common([r.get("fractions") for r in road])
    return CurveFacts(
        steps=int(steps) if isinstance(steps, int) and steps > 0 else None,
        image_size=tuple(int(v) for v in size) if size and len(size) == 2 else None,  # type: ignore[arg-type]
        fractions=tuple(float(v) for v in fractions) if fractions else None,  # type: ignore[union-attr]
    )


def trapezoid(curves: np.ndarray) -> np.ndarray:
    """Area under (rows, S + 1) curves with x = k / S on [0, 1] (`camscope.metrics.auc`)."""
    s = curves.shape[-1] - 1
    return (curves[..., :-1] + curves[..., 1:]).sum(axis=-1) / (2 * s)


def _coarser(base: str, column: str, stride: int) -> Derivation:
    """AUC of every ``stride``-th point: the run's curve at steps / ``stride``, when exact."""

    def settings(f: CurveFacts) -> tuple[str, str] | None:
        if f.steps is None or f.image_size is None or f.steps % stride or f.steps < 2 * stride:
            return None
        h, w, cpu = *f.image_size, torch.device("cpu")
        fine = _pixel_counts(h, w, f.steps, cpu)[::stride]
        if not torch.equal(fine, _pixel_counts(h, w, f.steps // stride, cpu)):
            return None  # every stride-th point is not what the coarser step count measures
        return f"{f.steps} steps", f"{f.steps // stride} steps"

    def value(curve: np.ndarray) -> np.ndarray:
        return trapezoid(curve[:, ::stride])

    return Derivation(base, "step count", (column,), value, settings, lambda f: f.steps + 1)


def _half(n: int, which: str) -> slice:
    """The first or the last half of n fractions, the middle one in both (9: 0-4 and 4-8)."""
    return slice(0, (n + 1) // 2) if which == "first" else slice(n // 2, n)


def _pct(fractions: Sequence[float]) -> str:
    return f"{100 * fractions[0]:g}–{100 * fractions[-1]:g} %"


def _fractions(base: str, which: str) -> Derivation:
    """ROAD ``base`` (road_morf, road_lerf, road_combined) over half of the removed fractions."""

    def settings(f: CurveFacts) -> tuple[str, str] | None:
        if f.fractions is None or len(f.fractions) < 3:
            return None
        return _pct(f.fractions), _pct(f.fractions[_half(len(f.fractions), which)])

    def value(morf: np.ndarray, lerf: np.ndarray) -> np.ndarray:
        part = _half(morf.shape[1], which)
        mo, le = morf[:, part].mean(axis=1), lerf[:, part].mean(axis=1)
        return {"road_morf": mo, "road_lerf": le, "road_combined": (le - mo) / 2}[base]

    columns = ("road_morf_curve", "road_lerf_curve")
    return Derivation(
        base, "removed fractions", columns, value, settings, lambda f: len(f.fractions)
    )


def _variant(suffix: str, derive: Derivation) -> MetricSpec:
    """The metric ``derive.base`` under another setting: its display, a key of its own."""
    spec = next(s for s in METRICS if s.key == derive.base)
    return dataclasses.replace(spec, key=f"{spec.key}@{suffix}", definition="", derive=derive)


#: Every setting variant the report derives (one declaration each; see the module docstring).
VARIANTS: tuple[MetricSpec, ...] = (
    *(_variant(f"1/{k}_steps", _coarser(key, key.removesuffix("_auc") + "_curve", k))
      for key in ("deletion_auc", "deletion_blur_auc", "insertion_auc") for k in (2, 4)),
    *(_variant(f"{which}_fractions", _fractions(key, which))
      for key in ("road_morf", "road_lerf", "road_combined") for which in ("first", "last")),
)  # fmt: skip


def _stacked(column: pa.ChunkedArray, points: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows whose list has ``points`` values, as (rows,) indices and (rows, points) float64."""
    arr = column.combine_chunks()
    if pa.types.is_null(arr.type):
        return np.empty(0, np.int64), np.empty((0, points))
    lengths = pc.fill_null(pc.list_value_length(arr), -1).to_numpy(zero_copy_only=False)
    rows = np.flatnonzero(lengths == points)
    picked = arr.take(pa.array(rows))
    flat = pc.list_flatten(picked).to_numpy(zero_copy_only=False).astype(np.float64)
    return rows, flat.reshape(len(rows), points)


def _derive_batch(part: pa.Table, variants: Sequence[MetricSpec], f: CurveFacts) -> dict:
    """Variant key -> (rows,) float64 values of one streamed part, NaN where not derivable."""
    out = {}
    for v in variants:
        d = v.derive
        values = np.full(part.num_rows, np.nan)
        picked = [_stacked(part[c], d.points(f)) for c in d.columns]  # type: ignore[union-attr]
        common = picked[0][0]
        for rows, _ in picked[1:]:
            common = np.intersect1d(common, rows)
        if common.size:
            arrays = [a[np.searchsorted(rows, common)] for rows, a in picked]
            values[common] = d.value(*arrays)  # type: ignore[union-attr]
        out[v.key] = values
    return out


def derive_settings(table: RunTable, s: Scalars, facts: CurveFacts) -> None:
    """Add every derivable variant of a measured metric to ``s`` (values and `Scalars.settings`).

    The curve columns are streamed one part at a time (`RunTable.batches`, the rows of
    `load_scalars` in its order); only the (rows,) values stay. A variant whose metric was not
    measured, or whose setting cannot be derived exactly from these curves, is left out.
    """
    chosen: list[tuple[MetricSpec, tuple[str, str]]] = []
    for v in VARIANTS:
        labels = v.derive.settings(facts)  # type: ignore[union-attr]
        base = v.derive.base  # type: ignore[union-attr]
        if labels and any(np.isfinite(s.values[m][base]).any() for m in s.methods):
            chosen.append((v, labels))
    if not chosen:
        return
    columns = list(dict.fromkeys(c for v, _ in chosen for c in v.derive.columns))  # type: ignore[union-attr]
    parts: dict[str, list[np.ndarray]] = {v.key: [] for v, _ in chosen}
    for part in table.batches(columns):
        for key, values in _derive_batch(part, [v for v, _ in chosen], facts).items():
            parts[key].append(values)
    for v, (run, other) in chosen:
        per_row = np.concatenate(parts[v.key]) if parts[v.key] else np.empty(0)
        if per_row.size == 0:
            continue
        for m in s.methods:
            rows = s.rows[m]
            s.values[m][v.key] = np.where(rows >= 0, per_row[np.clip(rows, 0, None)], np.nan)
        s.settings[v.key] = Setting(v, run, other)
