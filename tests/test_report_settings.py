"""Ranking robustness across settings of a metric, derived from a run's stored curves.

Derived values are checked against float64 references recomputed from the results table's curves
(numpy's trapezoid on the x of each point, ROAD means over the fractions chosen by value);
"every 2nd point is the coarser curve" against the deletion / insertion curves actually measured
at the coarser step count by a tiny model; Kendall's tau-b against a count of pairs by hand.
"""

from __future__ import annotations

import html
import itertools
import json
import re
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from synthetic_runs import make_run

from camscope import metrics as M
from camscope.report import build_report
from camscope.report.data import load_scalars, summarise
from camscope.report.source import RunTable
from camscope.report.variants import VARIANTS, CurveFacts, curve_facts, derive_settings

METHODS = ("gradcam", "ablationcam", "scorecam")
N = 30


def _text(path: Path) -> str:
    raw = path.read_text(encoding="utf-8")
    if path.suffix == ".html":
        raw = html.unescape(re.sub(r"<[^>]+>", " ", raw))
    return " ".join(raw.replace("|", " ").split())


def _scalars(run: Path, methods=METHODS):
    s = load_scalars(RunTable([run], list(methods)), methods)
    derive_settings(RunTable([run], list(methods)), s, curve_facts([_settings(run)]))
    return s


def _settings(run: Path) -> dict:
    return json.loads((run / "run.json").read_text())["settings"]


def _tau_b(x: list[float], y: list[float], tx: float = 0.0, ty: float = 0.0) -> float:
    """Kendall's tau-b by counting pairs (ties within the tolerances), one pair at a time."""
    con = dis = tie_x = tie_y = 0
    for i, j in itertools.combinations(range(len(x)), 2):
        dx = 0 if abs(x[i] - x[j]) <= tx else (1 if x[i] > x[j] else -1)
        dy = 0 if abs(y[i] - y[j]) <= ty else (1 if y[i] > y[j] else -1)
        if dx == 0 and dy == 0:
            continue
        if dx == 0:
            tie_x += 1
        elif dy == 0:
            tie_y += 1
        elif dx == dy:
            con += 1
        else:
            dis += 1
    n0 = con + dis
    return (con - dis) / np.sqrt((n0 + tie_x) * (n0 + tie_y))


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("settings") / "run", N, steps=8, part_rows=7)


def _reference(run: Path) -> dict[str, dict[str, dict[str, float]]]:
    """Variant key -> method -> image name -> value, float64 loops over the stored curves."""
    rows = pq.read_table(run / "results").to_pylist()
    fractions = _settings(run)["road"]["fractions"]
    out: dict[str, dict[str, dict[str, float]]] = {}
    for r in rows:
        for kind in ("deletion", "deletion_blur", "insertion"):
            if r.get(f"{kind}_curve") is None:
                continue  # not measured (deletion_blur without --blur-deletion)
            y = np.asarray(r[f"{kind}_curve"], dtype=np.float64)
            x = np.linspace(0.0, 1.0, len(y))
            for stride in (2, 4):
                key = f"{kind}_auc@1/{stride}_steps"
                area = float(np.trapezoid(y[::stride], x[::stride]))
                out.setdefault(key, {}).setdefault(r["method"], {})[r["name"]] = area
        for which, keep in (
            ("first", lambda f: f <= 0.5 + 1e-9),
            ("last", lambda f: f >= 0.5 - 1e-9),
        ):
            chosen = [j for j, f in enumerate(fractions) if keep(f)]
            morf = sum(float(r["road_morf_curve"][j]) for j in chosen) / len(chosen)
            lerf = sum(float(r["road_lerf_curve"][j]) for j in chosen) / len(chosen)
            for base, v in (
                ("road_morf", morf),
                ("road_lerf", lerf),
                ("road_combined", (lerf - morf) / 2),
            ):
                out.setdefault(f"{base}@{which}_fractions", {}).setdefault(r["method"], {})[
                    r["name"]
                ] = v
    return out


_BLUR_VARIANTS = {"deletion_blur_auc@1/2_steps", "deletion_blur_auc@1/4_steps"}


def test_derived_values_match_a_float64_reference(synthetic):
    s = _scalars(synthetic)
    ref = _reference(synthetic)
    assert set(s.settings) == set(ref) == {v.key for v in VARIANTS} - _BLUR_VARIANTS
    names = s.images.column("name").to_pylist()
    for key, setting in s.settings.items():
        assert setting.spec.derive is not None and setting.spec.key == key
        for m in METHODS:
            expected = np.array([ref[key][m][n] for n in names])
            assert np.allclose(s.values[m][key], expected, rtol=0, atol=1e-12), key
    labels = {k: (v.run, v.other) for k, v in s.settings.items()}
    assert labels["deletion_auc@1/2_steps"] == ("8 steps", "4 steps")
    assert labels["insertion_auc@1/4_steps"] == ("8 steps", "2 steps")
    assert labels["road_lerf@first_fractions"] == ("10–90 %", "10–50 %")
    assert labels["road_combined@last_fractions"] == ("10–90 %", "50–90 %")
    # a variant keeps its metric's display, direction and tie, and its family
    morf = s.settings["road_morf@last_fractions"].spec
    assert (morf.label, morf.higher_is_better, morf.family) == ("ROAD MoRF", False, "road")


def test_every_other_point_is_the_curve_measured_at_the_coarser_step_count():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(), torch.nn.Linear(4, 5),
    )  # fmt: skip
    x, maps = torch.randn(3, 3, 8, 6), torch.rand(3, 8, 6)
    targets = torch.tensor([0, 2, 4])
    with torch.inference_mode():
        for fn in (M.deletion_curve, M.insertion_curve):
            fine = fn(model, x, maps, targets, steps=16)
            for stride in (2, 4):
                coarse = fn(model, x, maps, targets, steps=16 // stride)
                assert torch.equal(fine[:, ::stride], coarse)
    facts = CurveFacts(steps=16, image_size=(8, 6), fractions=None)
    steps = [v for v in VARIANTS if v.derive.varies == "step count"]
    assert {v.derive.settings(facts) for v in steps} == {("16 steps", "8 steps"),
                                                         ("16 steps", "4 steps")}  # fmt: skip
    # 5 x 7 = 35 pixels in 8 steps (5 per step) is not 4 steps (9 per step): not derived
    odd = CurveFacts(steps=8, image_size=(5, 7))
    assert all(v.derive.settings(odd) is None for v in steps)
    assert all(v.derive.settings(CurveFacts(steps=8)) is None for v in steps)  # size unknown


def test_tau_and_the_ranking_under_each_setting(synthetic):
    s = _scalars(synthetic)
    summary = summarise(s, resamples=500)
    assert len(summary.settings) == len(VARIANTS) - len(_BLUR_VARIANTS)  # no --blur-deletion here
    for check in summary.settings:
        base, variant = check.base, check.setting.spec
        run_means = [np.mean(s.values[m][base.key]) for m in METHODS]
        other = [np.mean(s.values[m][variant.key]) for m in METHODS]
        sign = 1 if base.higher_is_better else -1
        by_hand = _tau_b(
            [sign * v for v in run_means], [sign * v for v in other], base.tie, base.tie
        )
        assert check.tau.mean == pytest.approx(by_hand), variant.key
        assert check.tau.low <= check.tau.mean <= check.tau.high and check.tau.n == N
        assert check.ranking.means == pytest.approx(dict(zip(METHODS, other, strict=True)))


def _dips(i: int, k: int, steps: int) -> dict:
    """Method 0's deletion curve dips at odd points (low AUC at 8 steps, missed at 4 and 2)."""
    noise = np.random.default_rng([i, k]).normal(0, 0.01, steps + 1)
    y = np.full(steps + 1, 0.5 if k == 0 else 0.35) + noise
    if k == 0:
        y[1::2] = 0.0
    area = float(M.auc(torch.tensor(y[None])).item())
    return {"deletion_curve": y.tolist(), "deletion_auc": area}


def test_a_setting_that_reverses_two_methods_is_said(tmp_path):
    run = make_run(tmp_path / "run", 40, ("gradcam", "ablationcam"), steps=8, curves=_dips)
    out = build_report([run], tmp_path / "out", resamples=1000)
    s = _scalars(run, ("gradcam", "ablationcam"))
    summary = summarise(s, resamples=1000)
    deletion = {c.setting.other: c for c in summary.settings if c.base.key == "deletion_auc"}
    assert set(deletion) == {"4 steps", "2 steps"}
    for check in deletion.values():
        assert check.tau.mean == pytest.approx(-1.0) and check.ranking.order[0] == "ablationcam"
    assert summary.rankings["deletion_auc"].order[0] == "gradcam"
    sentence = ("On these images the ranking of Grad-CAM and AblationCAM depends on the step "
                "count of Deletion AUC: Grad-CAM is ahead with 8 steps, AblationCAM with 4 steps "
                "and 2 steps.")  # fmt: skip
    for name in ("report.md", "report.html"):
        text = _text(out[name])
        assert sentence in text
        assert "Deletion AUC 8 steps 4 steps -1.00 [-1.00, -1.00] 40" in text
        assert "Across settings of a metric, derived from the run's stored curves" in text
    # the variants are not summarised or compared on their own
    assert "@" not in out["summary.csv"].read_text() + out["comparisons.csv"].read_text()


def test_no_variant_without_metrics_or_without_road(tmp_path):
    bare = make_run(tmp_path / "bare", 12, metrics=False)
    s = _scalars(bare)
    assert s.settings == {} and summarise(s, resamples=200).settings == []
    out = build_report([bare], bare, resamples=200)
    assert "Across settings of a metric" not in _text(out["report.md"])
    no_road = make_run(
        tmp_path / "noroad",
        12,
        curves=lambda i, k, steps: dict.fromkeys(
            ("road_morf", "road_lerf", "road_combined", "road_morf_curve", "road_lerf_curve")
        ),
    )
    settings = _settings(no_road)
    del settings["road"]  # as --no-road records it
    (no_road / "run.json").write_text(json.dumps({"state": "complete", "settings": settings}))
    s = _scalars(no_road)
    assert {v.spec.derive.base for v in s.settings.values()} == {"deletion_auc", "insertion_auc"}
    out = build_report([no_road], no_road, resamples=200)
    text = _text(out["report.md"])
    assert "4 other settings of 2 metrics" in text and "10–50 %" not in text
    # a run that did not record its image size: no step count is claimed
    unknown = make_run(tmp_path / "unknown", 12, image_size=None)
    assert {v.spec.derive.varies for v in _scalars(unknown).settings.values()} == {
        "removed fractions"
    }


def test_a_curve_of_another_length_gets_no_value(tmp_path):
    """A row whose stored curve has not the run's steps + 1 points is left out (no value)."""

    def short(i: int, k: int, steps: int) -> dict:
        return {"deletion_curve": [1.0, 0.5, 0.0]} if i == 0 else {}

    run = make_run(tmp_path / "run", 12, steps=8, curves=short)
    s = _scalars(run)
    first = s.images.column("name").to_pylist().index("img00000")
    for m in METHODS:
        values = s.values[m]["deletion_auc@1/2_steps"]
        assert np.isnan(values[first]) and np.isfinite(np.delete(values, first)).all()
        assert np.isfinite(s.values[m]["insertion_auc@1/2_steps"]).all()


def _blur_reverses(i: int, k: int, steps: int) -> dict:
    """Method 0 is ahead on deletion with the mean colour, method 1 with the blurred baseline."""
    rng = np.random.default_rng([i, k, 9])
    dele, blur = (0.2, 0.4) if k == 0 else (0.3, 0.25)
    x = np.linspace(0, 1, steps + 1)
    y = np.clip(1 - x / (2 * blur) + rng.normal(0, 0.01, steps + 1), 0, 1)
    return {"deletion_auc": float(np.clip(dele + rng.normal(0, 0.02), 0, 1)),
            "deletion_blur_curve": y.tolist(),
            "deletion_blur_auc": float(M.auc(torch.tensor(y[None])).item())}  # fmt: skip


def test_the_blurred_baseline_is_a_setting_of_deletion(tmp_path):
    """A run with --blur-deletion: agreement between the two baselines and their reversal said."""
    methods = ("gradcam", "ablationcam")
    run = make_run(tmp_path / "run", 40, methods, steps=8, curves=_blur_reverses)
    out = build_report([run], tmp_path / "out", resamples=1000)
    summary = summarise(_scalars(run, methods), resamples=1000)
    tau = summary.metric_agreement[("deletion_auc", "deletion_blur_auc")]
    assert tau.mean == pytest.approx(-1.0) and tau.high < 0
    assert summary.rankings["deletion_blur_auc"].order[0] == "ablationcam"
    s, ref = _scalars(run, methods), _reference(run)
    assert set(s.settings) >= _BLUR_VARIANTS  # its coarser step counts, from its stored curve
    names = s.images.column("name").to_pylist()
    for key in _BLUR_VARIANTS:
        for m in methods:
            expected = np.array([ref[key][m][n] for n in names])
            assert np.allclose(s.values[m][key], expected, rtol=0, atol=1e-12), key
    sentence = ("On these images the ranking of Grad-CAM and AblationCAM depends on the setting "
                "of one metric: Grad-CAM is ahead on Deletion AUC, AblationCAM on Deletion AUC "
                "(blurred baseline).")  # fmt: skip
    for name in ("report.md", "report.html"):
        robustness = _text(out[name]).split("Ranking robustness")[-1]
        assert sentence in robustness
        assert "by two settings of one metric" in robustness
    assert "deletion_blur_auc_mean" in out["summary.csv"].read_text()


def test_a_folder_without_the_blur_columns_reports_as_before(tmp_path):
    """Parts written before the column existed: read, reported, nothing said about blur."""
    run = make_run(tmp_path / "run", 12)
    for part in (run / "results").glob("*.parquet"):
        table = pq.read_table(part)
        pq.write_table(table.drop_columns(["deletion_blur_auc", "deletion_blur_curve"]), part)
    s = _scalars(run)
    assert all(np.isnan(s.values[m]["deletion_blur_auc"]).all() for m in METHODS)
    summary = summarise(s, resamples=200)
    assert "deletion_blur_auc" not in {spec.key for spec in summary.measured}
    out = build_report([run], run, resamples=200)
    assert "blurred baseline" not in _text(out["report.md"]) + _text(out["report.html"])
    assert "deletion_blur_auc" not in out["comparisons.csv"].read_text()
