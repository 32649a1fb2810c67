"""What the report says, as numbers: per-image scalars of a results table and their statistics.

`load_scalars` pivots the long results table (one row per image x method) into one aligned
float64 array per method and column (NaN where a method has no value for an image), which is all
the report holds per image: memory grows with n only by these scalars. `summarise` turns them into
per-method intervals, rankings with significance (`camscope.metrics.rank_methods`), agreement
means and the sanity verdicts.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from camscope.metrics import (
    MIN_N,
    RESAMPLES,
    Interval,
    Ranking,
    SanityVerdict,
    bootstrap_interval,
    proportion_interval,
    rank_methods,
    ranking_agreement,
    sanity_verdict,
)
from camscope.report.source import RunTable

__all__ = [
    "IMAGE_COLUMNS",
    "METRICS",
    "MetricSpec",
    "Derivation",
    "Scalars",
    "Setting",
    "SettingCheck",
    "Summary",
    "Thresholds",
    "load_scalars",
    "summarise",
]


@dataclass(frozen=True)
class Thresholds:
    """Every threshold the written analysis uses, in one place (each is stated in the report).

    strong_agreement / weak_agreement: Pearson r >= 0.7 is "strong", <= 0.3 "weak".
    spread_factor / spread_min_excess: a map is "spread" when its share of pixels above 0.5 is
        at least ``spread_factor`` times, and ``spread_min_excess`` (absolute) more than, the
        largest share among the other non-empty maps of the image.
    off_region_iou / shared_region_iou: a map is "off the shared region" when its top-20% IoU
        with every other non-empty map is below ``off_region_iou`` while those others reach at
        least ``shared_region_iou`` with each other (needs two or more others).
    sanity_threshold: pass when the mean |Spearman| after the last cascade step is below it.
    auc_margin: per image, a map is named most faithful by deletion/insertion only when its AUC
        beats every other map's by at least this much.
    """

    strong_agreement: float = 0.7
    weak_agreement: float = 0.3
    spread_factor: float = 2.0
    spread_min_excess: float = 0.10
    off_region_iou: float = 0.2
    shared_region_iou: float = 0.5
    sanity_threshold: float = 0.5
    auc_margin: float = 0.01


@dataclass(frozen=True)
class Derivation:
    """How a setting variant of a metric is computed from a row's stored curves (no forward pass).

    base: the key of the metric in `METRICS` whose setting this varies. varies: what differs, as
    the report says it ("step count"). columns: the stored per-row curve columns it reads.
    value: those curves, one (rows, points) float64 array per column, -> (rows,) values.
    settings: the run's facts (`camscope.report.variants.CurveFacts`) -> (the run's setting,
    this setting) as labels ("32 steps", "8 steps"), or None when this setting cannot be derived
    exactly from the stored curves (then it is left out, and nothing is said about it).
    points: the facts -> the length every stored curve must have (a row whose curve has another
    length, e.g. one re-evaluated with other steps, gets no value).
    """

    base: str
    varies: str
    columns: tuple[str, ...]
    value: Callable[..., np.ndarray]
    settings: Callable[..., tuple[str, str] | None]
    points: Callable[..., int]


@dataclass(frozen=True)
class MetricSpec:
    """A per-image metric: column of the table, display, range, interval, tie rule, definition.

    One declaration per metric in `METRICS` is all the report needs: the summary, the
    comparison matrices, the ranking robustness, summary.csv and comparisons.csv pick it up.
    bounds: the range of the per-image value (raw units). interval: "bootstrap" (percentile
    bootstrap of the mean) or "wilson" (proportion of true values; shown per image as yes/no).
    tie: means closer than this (raw units; half a unit of the last shown digit) are reported
    as tied. definition: one sentence for the report's definitions (``{steps}`` is replaced by
    the run's step count). ranked: whether a better value means a better explanation (ranked,
    compared and part of the robustness analysis) or only describes the maps. family: metrics
    that share a family are settings of one metric (e.g. ROAD most- and least-relevant first,
    deletion with a mean or a blurred baseline); the robustness analysis reports agreement
    between settings apart from agreement between metrics (default: the key, its own family).
    kind: what the metric needs and how the report groups it: "faithfulness" (forward passes,
    only with --metrics), "localisation" (only with --boxes, NaN for an image without boxes)
    or "complexity" (every map of every run). reading: for a metric that is not ranked, what a
    higher value means ("higher = sparser"), shown instead of a better direction. derive: set
    only on a setting variant (`camscope.report.variants.VARIANTS`): how it is computed from the
    stored curves; variants are not summarised, only compared with their metric's run setting.
    """

    key: str
    label: str
    unit: str
    scale: float
    higher_is_better: bool
    digits: int
    bounds: tuple[float, float] = (0.0, 1.0)
    interval: str = "bootstrap"
    tie: float = 5e-4
    definition: str = ""
    ranked: bool = True
    family: str = ""
    kind: str = "faithfulness"
    reading: str = ""
    derive: Derivation | None = None

    @property
    def group(self) -> str:
        """The family, or the key when none is declared."""
        return self.family or self.key

    def fmt(self, value: float) -> str:
        """Value in display units (``scale`` applied), ``digits`` decimals and the unit."""
        if value is None or not math.isfinite(value):
            return "n/a"
        return f"{value * self.scale:.{self.digits}f}{self.unit}"

    @property
    def direction(self) -> str:
        """Higher / lower "is better"; "descriptive[: reading]" for a metric not ranked."""
        if not self.ranked:
            return f"descriptive: {self.reading}" if self.reading else "descriptive"
        return "higher is better" if self.higher_is_better else "lower is better"

    @property
    def heading(self) -> str:
        """Label with its unit: "Average Drop (%)"."""
        return f"{self.label} ({self.unit})" if self.unit else self.label


_DROP = (
    "Average Drop % = 100 × mean of max(0, Y − O) / Y and Increase in Confidence % = 100 × "
    "share of images with O > Y, where Y is the target-class probability of the image and O "
    "that of the image multiplied by the map (Chattopadhyay et al., WACV 2018, arXiv:1710.11063)."
)
_AUC = (
    "Deletion / Insertion AUC: probability while the most salient pixels are replaced by the "
    "dataset mean / restored into a blurred copy, {steps} steps, trapezoid area on [0, 1] "
    "(Petsiuk et al., BMVC 2018, arXiv:1806.07421)."
)
_BLUR = (
    "Deletion AUC (blurred baseline), with --blur-deletion: the same deletion, {steps} steps, "
    "but the removed pixels are taken from the image blurred (11×11 Gaussian, σ 5, the "
    "insertion's start image) instead of the dataset mean: another setting of the same metric, "
    "so the ranking robustness compares the two baselines."
)
_ROAD = (
    "ROAD MoRF / LeRF: mean probability after the 10 %, 20 %, ..., 90 % most / least relevant "
    "pixels are removed and filled by noisy linear imputation (each the mean of its neighbours "
    "plus noise), so the shape of the hole does not leak the class (Rong et al., ICML 2022, "
    "arXiv:2202.00449)."
)

_POINTING = (
    "Pointing game: a hit when the map's maximum lies within 15 px of a ground-truth box "
    "(Zhang et al., ECCV 2016, arXiv:1608.00507); the share of hits, with a Wilson interval. "
    "Energy-based pointing game: the share of the min-max normalised map's sum inside the boxes "
    "(Wang et al., Score-CAM, CVPR-W 2020, arXiv:1910.01279)."
)
_RELEVANCE = (
    "Relevance mass: the share of the map's positive values inside the boxes; relevance rank: "
    "the share of the K highest pixels inside the boxes, K their area (Arras et al., CLEVR-XAI, "
    "Information Fusion 2022, arXiv:2003.07258). Localisation metrics need --boxes; an image "
    "without boxes is left out of them (and of their comparisons)."
)
_COMPLEXITY = (
    "Sparseness: the Gini index of the map's absolute values, 0 = every pixel equal, near 1 = "
    "one pixel holds everything (Chalasani et al., ICML 2020, arXiv:1810.06583). Entropy: the "
    "Shannon entropy (nats) of the map's values divided by their sum, 0 = one pixel, ln(H×W) = "
    "uniform (Bhatt et al., IJCAI 2020, arXiv:2005.00631). Both describe the maps and rank "
    "nothing: a sparser map is not a more faithful one."
)
_LOC = {"kind": "localisation"}
_CPX = {"kind": "complexity", "ranked": False}

#: Every per-image metric of the results table, in report order (one declaration each).
METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("average_drop", "Average Drop", "%", 100.0, False, 1, definition=_DROP),
    MetricSpec("increase", "Increase in Confidence", "%", 100.0, True, 1, interval="wilson"),
    MetricSpec("deletion_auc", "Deletion AUC", "", 1.0, False, 3, definition=_AUC,
               family="deletion"),
    MetricSpec("deletion_blur_auc", "Deletion AUC (blurred baseline)", "", 1.0, False, 3,
               definition=_BLUR, family="deletion"),
    MetricSpec("insertion_auc", "Insertion AUC", "", 1.0, True, 3),
    MetricSpec("road_morf", "ROAD MoRF", "", 1.0, False, 3, definition=_ROAD, family="road"),
    MetricSpec("road_lerf", "ROAD LeRF", "", 1.0, True, 3, family="road"),
    MetricSpec("road_combined", "ROAD combined", "", 1.0, True, 3, bounds=(-0.5, 0.5),
               definition="ROAD combined = (LeRF − MoRF) / 2, in [−0.5, 0.5].", family="road"),
    MetricSpec("pointing_game", "Pointing game", "%", 100.0, True, 1, interval="wilson",
               definition=_POINTING, **_LOC),
    MetricSpec("energy_pointing_game", "Energy pointing game", "", 1.0, True, 3, **_LOC),
    MetricSpec("relevance_mass", "Relevance mass", "", 1.0, True, 3, definition=_RELEVANCE,
               **_LOC),
    MetricSpec("relevance_rank", "Relevance rank", "", 1.0, True, 3, **_LOC),
    MetricSpec("sparseness", "Sparseness (Gini)", "", 1.0, True, 3, definition=_COMPLEXITY,
               reading="higher = sparser", **_CPX),
    MetricSpec("entropy", "Entropy (nats)", "", 1.0, False, 2, bounds=(0.0, math.inf),
               tie=5e-3, reading="higher = more spread", **_CPX),
)  # fmt: skip

#: What each kind of metric needs, as the report says it.
KIND_SOURCE = {"faithfulness": "--metrics", "localisation": "--boxes", "complexity": "every map"}

#: Per-image columns (shared by every method of an image) kept for captions and prose.
IMAGE_COLUMNS = (
    "key", "name", "file", "top1_index", "top1_name", "top1_prob", "target_index",
    "target_name", "truth_index",
)  # fmt: skip


def _method_columns() -> tuple[str, ...]:
    """Per-image, per-method columns the report reads: map facts and every metric of METRICS."""
    return ("empty", "share_above_half", "seconds", *(s.key for s in METRICS))


@dataclass(frozen=True)
class Setting:
    """A metric under another setting, derived for this report (`camscope.report.variants`).

    spec: the variant (``spec.derive`` set; label, direction and tie are its metric's). run: the
    run's setting ("32 steps"); other: this one ("8 steps").
    """

    spec: MetricSpec
    run: str
    other: str


@dataclass
class Scalars:
    """Per-image scalars of a results table, aligned over the ok images.

    images: IMAGE_COLUMNS + ``run_dir`` per ok image (one row per image). values: method ->
    column -> (N,) float64, NaN where missing; columns are ``_method_columns()`` plus
    ``pearson__X`` / ``top20_iou__X``. rows: method -> (N,) int64 position of that image's row
    in `RunTable.batches` order (-1 where missing), to fetch maps of chosen images later.
    failures: name, file, error of failed inputs. has_metrics: faithfulness was measured (a run
    with --metrics; complexity, in every run, and localisation, with --boxes, do not count).
    settings: variant key -> `Setting`, the setting variants derived from the stored curves
    (their per-image values are in ``values`` under the variant's key).
    """

    methods: list[str]
    images: pa.Table
    values: dict[str, dict[str, np.ndarray]]
    rows: dict[str, np.ndarray]
    failures: pa.Table
    has_metrics: bool
    settings: dict[str, Setting] = field(default_factory=dict)

    @property
    def n(self) -> int:
        """The number of images (rows of ``images``)."""
        return self.images.num_rows


def _as_float(column: pa.ChunkedArray) -> np.ndarray:
    if pa.types.is_null(column.type):
        return np.full(len(column), np.nan)
    if pa.types.is_boolean(column.type):
        column = pc.cast(column, pa.float64())
    return pc.fill_null(pc.cast(column, pa.float64()), math.nan).to_numpy(zero_copy_only=False)


def _method_order(found: Sequence[str], preferred: Sequence[str]) -> list[str]:
    first = [m for m in dict.fromkeys(preferred) if m in found]
    return first + [m for m in found if m not in first]


def load_scalars(table: RunTable, preferred: Sequence[str] = ()) -> Scalars:
    """Read the scalar columns of ``table`` and pivot them per method (see `Scalars`)."""
    agree = [c for c in table.columns if c.startswith(("pearson__", "top20_iou__"))]
    columns = _method_columns()
    cols = [*IMAGE_COLUMNS, "object", "status", "error", "method", *columns, *agree]
    data = table.read(cols)
    position = np.arange(data.num_rows)
    ok = pc.fill_null(pc.equal(data["status"], "ok"), False).to_numpy(zero_copy_only=False)
    failures = data.filter(pa.array(~ok)).select(["name", "file", "error", "run_dir"])
    okd = data.filter(pa.array(ok))
    pos = position[ok]
    obj = pc.fill_null(pc.cast(okd["object"], pa.string()), "")  # per-object tasks: a unit each
    ident = pc.binary_join_element_wise(okd["key"], okd["name"], obj, "\x00")
    encoded = pc.dictionary_encode(ident).combine_chunks()
    image = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    n = len(encoded.dictionary)
    _, first = np.unique(image, return_index=True)  # each image's first row
    images = okd.select([*IMAGE_COLUMNS, "run_dir"]).take(pa.array(first))
    method_col = okd["method"].to_pylist()
    methods = _method_order(list(dict.fromkeys(m for m in method_col if m)), preferred)
    method_arr = np.array(method_col, dtype=object)
    values: dict[str, dict[str, np.ndarray]] = {}
    rows: dict[str, np.ndarray] = {}
    for m in methods:
        sel = np.flatnonzero(method_arr == m)
        rows[m] = np.full(n, -1, dtype=np.int64)
        rows[m][image[sel]] = pos[sel]
        values[m] = {}
        for c in (*columns, *agree):
            full = np.full(n, np.nan)
            full[image[sel]] = _as_float(okd[c].take(pa.array(sel)))
            values[m][c] = full
    has_metrics = any(
        np.isfinite(values[m][spec.key]).any()
        for m in methods
        for spec in METRICS
        if spec.kind == "faithfulness"  # complexity is in every run, localisation with --boxes
    )
    return Scalars(methods, images, values, rows, failures, has_metrics)


@dataclass(frozen=True)
class SettingCheck:
    """A metric's ranking under another setting, against the run's setting of it.

    setting: the `Setting`. ranking: the methods ranked by the variant (`rank_methods`, as any
    metric). tau: Kendall tau-b between the run's setting's order of the methods and this
    setting's, with its bootstrap interval (`ranking_agreement`).
    """

    setting: Setting
    ranking: Ranking
    tau: Interval

    @property
    def base(self) -> MetricSpec:
        """The metric (in `METRICS`) whose setting is varied."""
        key = self.setting.spec.derive.base  # type: ignore[union-attr]
        return next(spec for spec in METRICS if spec.key == key)


@dataclass
class Summary:
    """Statistics of one report: per-method intervals, rankings, agreement, sanity.

    intervals: method -> metric key -> `Interval`. n: method -> images with a map.
    empty: method -> images whose map is empty. rankings: metric key -> `Ranking`.
    agreement: (a, b) -> {"pearson": Interval, "top20_iou": Interval}. sanity: method ->
    `SanityVerdict` (+ ``sanity_steps``: method -> (steps, last block)). measured: the metrics
    with a value for some method. coverage: metric kind -> images with a value of a metric of
    that kind for some method (localisation: the images that had boxes). settings: one
    `SettingCheck` per derived setting variant of a ranked metric (`Scalars.settings`).
    """

    intervals: dict[str, dict[str, Interval]]
    n: dict[str, int]
    empty: dict[str, int]
    rankings: dict[str, Ranking]
    agreement: dict[tuple[str, str], dict[str, Interval]]
    sanity: dict[str, SanityVerdict] = field(default_factory=dict)
    sanity_steps: dict[str, tuple[int, str]] = field(default_factory=dict)
    resamples: int = RESAMPLES
    min_n: int = MIN_N
    measured: list[MetricSpec] = field(default_factory=list)
    metric_agreement: dict[tuple[str, str], Interval] = field(default_factory=dict)
    coverage: dict[str, int] = field(default_factory=dict)
    settings: list[SettingCheck] = field(default_factory=list)

    @property
    def ranked(self) -> list[MetricSpec]:
        """The measured metrics that rank methods and have a ranking."""
        return [m for m in self.measured if m.ranked and self.rankings.get(m.key)]

    def of_kind(self, kind: str) -> list[MetricSpec]:
        """The measured metrics of one kind ("faithfulness", "localisation", "complexity")."""
        return [m for m in self.measured if m.kind == kind]


def _interval(spec: MetricSpec, values: np.ndarray, resamples: int) -> Interval:
    if spec.interval == "wilson":
        return proportion_interval(values)
    return bootstrap_interval(values, bounds=spec.bounds, resamples=resamples)


def _agreement(s: Scalars, resamples: int) -> dict[tuple[str, str], dict[str, Interval]]:
    out = {}
    for i, a in enumerate(s.methods):
        for b in s.methods[i + 1 :]:
            cols = {}
            for key, bounds in (("pearson", (-1.0, 1.0)), ("top20_iou", (0.0, 1.0))):
                v = s.values[a].get(f"{key}__{b}")
                if v is None:
                    v = s.values[b].get(f"{key}__{a}")
                if v is not None and np.isfinite(v).any():
                    cols[key] = bootstrap_interval(v, bounds=bounds, resamples=resamples)
            if cols:
                out[(a, b)] = cols
    return out


def _rank(s: Scalars, spec: MetricSpec, resamples: int) -> Ranking:
    samples: Mapping[str, np.ndarray] = {m: s.values[m][spec.key] for m in s.methods}
    return rank_methods(
        samples, higher_is_better=spec.higher_is_better, tolerance=spec.tie,
        resamples=resamples, bounds=spec.bounds,
    )  # fmt: skip


def _setting_checks(s: Scalars, ranked: Sequence[MetricSpec], resamples: int) -> list[SettingCheck]:
    """Per ranked metric: each derived setting's ranking and its tau with the run's setting."""
    out = []
    for spec in ranked:
        found = [v for v in s.settings.values() if v.spec.derive.base == spec.key]  # type: ignore[union-attr]
        found = [v for v in found if any(np.isfinite(s.values[m][v.spec.key]).any()
                                         for m in s.methods)]  # fmt: skip
        if not found or len(s.methods) < 2:
            continue
        specs = [spec, *(v.spec for v in found)]
        taus = ranking_agreement(
            {x.key: {m: s.values[m][x.key] for m in s.methods} for x in specs},
            {x.key: x.higher_is_better for x in specs},
            tolerance={x.key: x.tie for x in specs},
            resamples=resamples,
        )
        out += [SettingCheck(v, _rank(s, v.spec, resamples), taus[(spec.key, v.spec.key)])
                for v in found]  # fmt: skip
    return out


def _sanity(sanity: pa.Table | None, threshold: float) -> tuple[dict, dict]:
    """Verdict per method from the last cascade step of sanity.parquet (all folders)."""
    if sanity is None or sanity.num_rows == 0:
        return {}, {}
    verdicts, steps = {}, {}
    method = np.array(sanity["method"].to_pylist(), dtype=object)
    step = sanity["step"].to_numpy(zero_copy_only=False)
    for m in dict.fromkeys(method.tolist()):
        sel = method == m
        last = int(step[sel].max())
        final = np.flatnonzero(sel & (step == last))
        sub = sanity.take(pa.array(final))
        rho = _as_float(sub["spearman"])
        empty = _as_float(sub["empty_randomised"]) > 0
        verdicts[m] = sanity_verdict(rho, empty, threshold)
        steps[m] = (last, str(sub["block"][0].as_py()))
    return verdicts, steps


def summarise(
    s: Scalars,
    sanity: pa.Table | None = None,
    *,
    thresholds: Thresholds = Thresholds(),
    resamples: int = RESAMPLES,
) -> Summary:
    """Intervals, rankings (ties, corrected significance), agreement, metric agreement, sanity."""
    measured = [
        spec for spec in METRICS if any(np.isfinite(s.values[m][spec.key]).any() for m in s.methods)
    ]
    intervals = {
        m: {spec.key: _interval(spec, s.values[m][spec.key], resamples) for spec in METRICS}
        for m in s.methods
    }
    rankings = {spec.key: _rank(s, spec, resamples) for spec in measured}
    ranked = [spec for spec in measured if spec.ranked]
    metric_agreement = {}
    if len(ranked) > 1 and len(s.methods) > 1:
        metric_agreement = ranking_agreement(
            {spec.key: {m: s.values[m][spec.key] for m in s.methods} for spec in ranked},
            {spec.key: spec.higher_is_better for spec in ranked},
            tolerance={spec.key: spec.tie for spec in ranked},
            resamples=resamples,
        )
    verdicts, steps = _sanity(sanity, thresholds.sanity_threshold)
    coverage = {}
    for kind in dict.fromkeys(spec.kind for spec in METRICS):
        cols = [s.values[m][spec.key] for spec in METRICS if spec.kind == kind for m in s.methods]
        coverage[kind] = int(np.isfinite(np.stack(cols)).any(axis=0).sum()) if cols else 0
    return Summary(
        intervals=intervals,
        n={m: int((s.rows[m] >= 0).sum()) for m in s.methods},
        empty={m: int(np.nansum(s.values[m]["empty"])) for m in s.methods},
        rankings=rankings,
        agreement=_agreement(s, resamples),
        sanity=verdicts,
        sanity_steps=steps,
        resamples=resamples,
        measured=measured,
        metric_agreement=metric_agreement,
        coverage=coverage,
        settings=_setting_checks(s, ranked, resamples),
    )
