"""Localisation, complexity and ROAD in the report, checked against slow references by hand.

Every number is recomputed from metrics.csv (or the results table) with the csv module and
float64 numpy loops: means, Wilson intervals by the textbook formula, percentile-bootstrap and
max-|t| bootstrap-t intervals by explicit resampling loops (their own random numbers, so they
agree within Monte Carlo error), Kendall's tau-b by counting pairs. Runs come from
`synthetic_runs.make_run` (boxes for some images only) and one real run of a tiny random model.
"""

from __future__ import annotations

import csv
import html
import itertools
import math
import re
from pathlib import Path

import numpy as np
import pytest
from synthetic_runs import make_run

from camscope import metrics as M
from camscope.report import METRICS, build_report
from camscope.report.data import load_scalars, summarise
from camscope.report.source import RunTable

METHODS = ("gradcam", "ablationcam", "scorecam")
N, BOXED = 40, [i for i in range(40) if i % 3 != 0]  # 26 of 40 images have boxes
LOCALISATION = ("pointing_game", "energy_pointing_game", "relevance_mass", "relevance_rank")
COMPLEXITY = ("sparseness", "entropy")
ROAD = ("road_morf", "road_lerf", "road_combined")
Z = 1.959963984540054  # the 97.5 % normal quantile


def _spec(key: str):
    return next(s for s in METRICS if s.key == key)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _per_image(run: Path, key: str) -> dict[str, np.ndarray]:
    """method -> (images,) float64 of ``key`` from metrics.csv, by name order; "" -> NaN."""
    rows = _rows(run / "metrics.csv")
    names = sorted({r["name"] for r in rows})
    out = {}
    for m in dict.fromkeys(r["method"] for r in rows):
        by = {r["name"]: r[key] for r in rows if r["method"] == m}
        out[m] = np.array([float(by[n]) if by.get(n, "") != "" else np.nan for n in names])
    return out


def _text(path: Path) -> str:
    """The words of report.html or report.md: tags stripped, entities decoded, one space."""
    raw = path.read_text(encoding="utf-8")
    if path.suffix == ".html":
        raw = html.unescape(re.sub(r"<[^>]+>", " ", raw))
    return " ".join(raw.replace("|", " ").split())


def _wilson(values: np.ndarray) -> tuple[float, float]:
    k, n = float(values.sum()), len(values)
    p = k / n
    centre = (p + Z * Z / (2 * n)) / (1 + Z * Z / n)
    half = Z / (1 + Z * Z / n) * math.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n))
    return centre - half, centre + half


def _bootstrap(values: np.ndarray, resamples: int = 4000) -> tuple[float, float]:
    """Percentile bootstrap of the mean, one resample at a time."""
    rng = np.random.default_rng(12345)
    means = []
    for _ in range(resamples):
        means.append(values[rng.integers(0, len(values), len(values))].mean())
    return tuple(np.quantile(means, [0.025, 0.975]))


def _max_t(diffs: list[np.ndarray], resamples: int = 3000) -> list[tuple[float, float]]:
    """Simultaneous max-|t| bootstrap-t intervals of paired differences (images resampled
    together; each resample's standard error floored at half the observed one), by loops."""
    n = len(diffs[0])
    d = [x.mean() for x in diffs]
    se = [x.std(ddof=1) / math.sqrt(n) for x in diffs]
    rng = np.random.default_rng(54321)
    t_max = []
    for _ in range(resamples):
        idx = rng.integers(0, n, n)
        t = 0.0
        for x, mean, s in zip(diffs, d, se, strict=True):
            if s == 0:
                continue
            star = x[idx]
            s_star = max(star.std(ddof=1) / math.sqrt(n), M.SE_FLOOR * s)
            t = max(t, abs(star.mean() - mean) / s_star)
        t_max.append(t)
    c = float(np.quantile(t_max, 0.95, method="higher"))
    return [(mean - c * s, mean + c * s) for mean, s in zip(d, se, strict=True)]


def _tau_b(x: list[float], y: list[float]) -> float:
    """Kendall's tau-b by counting concordant, discordant and tied pairs."""
    conc = disc = tx = ty = 0
    for i, j in itertools.combinations(range(len(x)), 2):
        a, b = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
        if a == 0 and b == 0:
            continue
        if a == 0:
            tx += 1
        elif b == 0:
            ty += 1
        elif a == b:
            conc += 1
        else:
            disc += 1
    return (conc - disc) / math.sqrt((conc + disc + tx) * (conc + disc + ty))


@pytest.fixture(scope="module")
def boxed(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    run = make_run(tmp_path_factory.mktemp("boxed") / "run", N, boxes=lambda i: i % 3 != 0,
                   shift=0.05, part_rows=16)  # fmt: skip
    return run, build_report([run], run.parent / "report", resamples=2000)


def test_summary_of_every_new_metric_is_the_brute_force_one(boxed):
    run, out = boxed
    summary = {r["method"]: r for r in _rows(out["summary.csv"])}
    for key in (*LOCALISATION, *COMPLEXITY, *ROAD):
        spec = _spec(key)
        col = f"{key}{'_pct' if spec.unit == '%' else ''}"
        for m, values in _per_image(run, key).items():
            values = values[np.isfinite(values)]
            assert len(values) == (len(BOXED) if key in LOCALISATION else N)
            row = summary[m]
            mean, low, high = (
                float(row[f"{col}_{x}"]) / spec.scale for x in ("mean", "low", "high")
            )
            assert mean == pytest.approx(values.mean(), rel=1e-5, abs=1e-6)
            if spec.interval == "wilson":
                assert row[f"{key}_interval"] == "Wilson score"
                assert (low, high) == pytest.approx(_wilson(values), abs=1e-5)
            else:
                assert row[f"{key}_interval"] == "bootstrap percentile"
                se = values.std(ddof=1) / math.sqrt(len(values))
                ref = _bootstrap(values)
                assert low == pytest.approx(ref[0], abs=0.3 * se)
                assert high == pytest.approx(ref[1], abs=0.3 * se)


def test_localisation_comparisons_drop_images_without_boxes_pairwise(boxed):
    run, out = boxed
    rows = [r for r in _rows(out["comparisons.csv"]) if r["metric"] in LOCALISATION]
    assert {r["metric"] for r in rows} == set(LOCALISATION) and len(rows) == 4 * 3
    for key in LOCALISATION:
        values = _per_image(run, key)
        mine = [r for r in rows if r["metric"] == key]
        diffs = []
        for r in mine:
            d = values[r["method_a"]] - values[r["method_b"]]
            diffs.append(d[np.isfinite(d)])  # the images both have: those with boxes
        reference = _max_t(diffs)
        scale = _spec(key).scale
        for r, d, (low, high) in zip(mine, diffs, reference, strict=True):
            assert int(r["n"]) == len(d) == len(BOXED)
            assert float(r["difference"]) / scale == pytest.approx(d.mean(), abs=1e-6)
            got = float(r["low"]) / scale, float(r["high"]) / scale
            assert got == pytest.approx((low, high), abs=0.1 * (high - low))
            assert r["correction"] == M.CORRECTION
            assert r["significant"] == str(got[0] > 0 or got[1] < 0)


def test_both_renderings_say_the_boxes_once_and_show_the_sections(boxed):
    _, out = boxed
    for name in ("report.md", "report.html"):
        text = _text(out[name])
        assert text.count(f"{len(BOXED)} of {N} images had boxes") == 1, name
        # the localisation table, then the complexity table, apart from the faithfulness one
        assert "Pointing game (%), higher is better" in text
        assert "Sparseness (Gini), descriptive: higher = sparser" in text
        assert "Entropy (nats), descriptive: higher = more spread" in text
        for label in ("Pointing game", "Energy pointing game", "Relevance mass", "Relevance rank"):
            caption = (
                f"{label}{' (%)' if label == 'Pointing game' else ''}: row − column, mean "
                f"difference [95% simultaneous interval], n = {len(BOXED)} images per pair"
            )
            assert caption in text, (name, label)
        for label in ("ROAD MoRF", "ROAD LeRF", "ROAD combined"):
            assert f"{label}: row − column" in text
        assert f"n = {N} images per pair" in text  # the faithfulness metrics: every image
        for label in ("Sparseness (Gini)", "Entropy (nats)"):
            assert f"{label}: row − column" not in text  # descriptive: no matrix, no ranking
            assert f"**{label}**" not in text and f"{label} (higher is better):" not in text
        robustness = text[text.index("Ranking robustness across metrics", text.index("Rankings")) :]
        robustness = robustness[: robustness.index("Agreement between methods")]
        assert "Relevance rank" in robustness and "Pointing game" in robustness
        assert "Sparseness" not in robustness and "Entropy" not in robustness


def test_kendall_tau_compares_each_pair_of_metrics_on_the_images_both_have(boxed):
    run, _ = boxed
    s = load_scalars(RunTable([run], list(METHODS)), METHODS)
    # Average Drop made to reverse its order on the images WITHOUT boxes only: over all images
    # it orders the methods one way, over the boxed images (those relevance mass has) the other
    unboxed = np.array([i not in BOXED for i in range(N)])
    for k, m in enumerate(METHODS):
        drop = s.values[m]["average_drop"]
        drop[unboxed] = 0.9 - 0.3 * k  # scorecam far lowest (best) there
        drop[~unboxed] = 0.2 + 0.05 * k + 0.01 * np.arange((~unboxed).sum()) / N
    summary = summarise(s, resamples=500)
    tau = summary.metric_agreement[("average_drop", "relevance_mass")]
    # by hand: each method's two means over the images where it has both values
    both = {m: np.isfinite(s.values[m]["average_drop"]) & np.isfinite(s.values[m]["relevance_mass"])
            for m in METHODS}  # fmt: skip
    drop = [-s.values[m]["average_drop"][both[m]].mean() for m in METHODS]  # lower is better
    mass = [s.values[m]["relevance_mass"][both[m]].mean() for m in METHODS]
    assert tau.mean == pytest.approx(_tau_b(drop, mass)) and tau.mean == pytest.approx(1.0)
    assert tau.n == len(BOXED) and tau.low <= tau.mean <= tau.high
    everywhere = [-np.nanmean(s.values[m]["average_drop"]) for m in METHODS]
    assert _tau_b(everywhere, mass) == pytest.approx(-1.0)  # what mixing image sets would say
    # two metrics on every image keep the joint computation: same tau as by hand
    ins = summary.metric_agreement[("deletion_auc", "insertion_auc")]
    dele = [-np.mean(s.values[m]["deletion_auc"]) for m in METHODS]
    inse = [np.mean(s.values[m]["insertion_auc"]) for m in METHODS]
    assert ins.mean == pytest.approx(_tau_b(dele, inse)) and ins.n == N


def test_road_is_a_family_of_settings_ranked_everywhere(boxed):
    run, out = boxed
    s = load_scalars(RunTable([run], list(METHODS)), METHODS)
    summary = summarise(s, resamples=500)
    ranked = [spec.key for spec in summary.ranked]
    assert [k for k in ranked if k.startswith("road")] == list(ROAD)
    assert {_spec(k).family for k in ROAD} == {"road"}
    assert [_spec(k).direction for k in ROAD] == ["lower is better", "higher is better",
                                                  "higher is better"]  # fmt: skip
    assert _spec("road_combined").bounds == (-0.5, 0.5)
    for a, b in itertools.combinations(ROAD, 2):
        assert (a, b) in summary.metric_agreement
    # combined = (LeRF - MoRF) / 2 per image, so its mean is that of the means
    v = {k: _per_image(run, k)["gradcam"] for k in ROAD}
    assert np.allclose(v["road_combined"], (v["road_lerf"] - v["road_morf"]) / 2, atol=1e-5)
    for name in ("report.md", "report.html"):
        text = _text(out[name])
        assert "ROAD combined, higher is better" in text and "ROAD MoRF, lower is better" in text
        assert "by two settings of one metric" in text  # the ROAD family, apart from the metrics
    assert {r["metric"] for r in _rows(out["comparisons.csv"])} >= set(ROAD)


def test_a_run_without_metrics_does_not_look_like_a_metrics_run(tmp_path):
    run = make_run(tmp_path / "run", 12, metrics=False)  # complexity is in every run
    s = load_scalars(RunTable([run], list(METHODS)), METHODS)
    assert not s.has_metrics
    assert all(np.isfinite(s.values[m]["sparseness"]).all() for m in METHODS)
    out = build_report([run], tmp_path / "report", resamples=500)
    assert "curves.png" not in out
    for name in ("report.md", "report.html"):
        text = _text(out[name])
        assert "Faithfulness was not measured (run without --metrics): no ranking." in text
        assert "Ranking robustness across metrics" not in text and "Least faithful maps" not in text
        assert "Average Drop (%)" not in text and "row − column" not in text
        assert "had boxes" not in text and "Pointing game" not in text  # no empty tables
        assert "Sparseness (Gini), descriptive: higher = sparser" in text
    summary = {r["method"]: r for r in _rows(out["summary.csv"])}
    for m in METHODS:
        assert (
            summary[m]["average_drop_pct_mean"] == "" and summary[m]["pointing_game_pct_mean"] == ""
        )
        assert summary[m]["sparseness_mean"] != ""


def test_boxes_without_metrics_rank_localisation_only(tmp_path):
    run = make_run(tmp_path / "run", 15, metrics=False, boxes=lambda i: i < 12, shift=0.1)
    out = build_report([run], tmp_path / "report", resamples=500)
    for name in ("report.md", "report.html"):
        text = _text(out[name])
        assert "Faithfulness was not measured (run without --metrics): no ranking by it." in text
        assert text.count("12 of 15 images had boxes") == 1
        assert "Relevance mass: row − column" in text and "Deletion AUC" not in text
        assert "Across 4 metrics and 3 methods" in text  # robustness over localisation alone
    assert "curves.png" not in out


def test_boxes_given_but_none_matched_is_said(tmp_path):
    run = make_run(tmp_path / "run", 6, boxes=lambda i: False)
    out = build_report([run], tmp_path / "report", resamples=200)
    for name in ("report.md", "report.html"):
        text = _text(out[name])
        assert "--boxes was given but none of the 6 images had boxes" in text
        assert "had boxes;" not in text and "Pointing game" not in text


def test_a_run_without_boxes_has_no_localisation_anywhere(tmp_path):
    run = make_run(tmp_path / "run", 12)
    out = build_report([run], tmp_path / "report", resamples=200)
    for name in ("report.md", "report.html"):
        text = _text(out[name])
        assert "had boxes" not in text and "--boxes" not in text and "Relevance" not in text
        assert "Pointing game" not in text and "Localisation" not in text
    assert not {r["metric"] for r in _rows(out["comparisons.csv"])} & set(LOCALISATION)


# ------------------------------------------------------------------------ a real (tiny) run


@pytest.fixture(scope="module")
def real(tmp_path_factory) -> tuple[Path, Path]:
    from run_helpers import make_images

    from camscope.run import RunConfig, run_local

    root = tmp_path_factory.mktemp("real")
    make_images(root / "in", 12, seed=5)
    lines = [f"img{i:02d}.png,{2 + i},{1 + i},{36 + i},{28 + i % 5}" for i in range(12) if i % 3]
    (root / "boxes.csv").write_text("file,x0,y0,x1,y1\n" + "\n".join(lines) + "\n")
    kw = {"model": "test_resnet", "random_weights": True, "methods": ("gradcam", "gradcampp")}
    run_local(RunConfig(inputs=(str(root / "in"),), out_dir=str(root / "metrics"), metrics=True,
                        road=False, steps=2, sanity_images=0, boxes=str(root / "boxes.csv"),
                        **kw))  # fmt: skip
    run_local(RunConfig(inputs=(str(root / "in"),), out_dir=str(root / "plain"), **kw))
    return root / "metrics", root / "plain"


def test_a_real_run_with_boxes_for_some_images(real):
    run, _ = real
    out = build_report([run], run.parent / "report", resamples=2000)
    summary = {r["method"]: r for r in _rows(out["summary.csv"])}
    for key in (*LOCALISATION, *COMPLEXITY, "average_drop", "deletion_auc"):
        spec = _spec(key)
        col = f"{key}{'_pct' if spec.unit == '%' else ''}"
        for m, values in _per_image(run, key).items():
            values = values[np.isfinite(values)]
            if key in LOCALISATION and key != "pointing_game":  # NaN only without boxes
                assert len(values) == 8
            mean = float(summary[m][f"{col}_mean"]) / spec.scale
            assert mean == pytest.approx(values.mean(), rel=1e-5, abs=1e-5)
            if spec.interval == "wilson":
                low = float(summary[m][f"{col}_low"]) / spec.scale
                assert low == pytest.approx(_wilson(values)[0], abs=1e-5)
    for name in ("report.md", "report.html"):
        text = _text(out[name])
        assert text.count("8 of 12 images had boxes") == 1
        assert "Relevance rank: row − column" in text
    rows = [r for r in _rows(out["comparisons.csv"]) if r["metric"] == "relevance_mass"]
    values = _per_image(run, "relevance_mass")
    d = values["gradcam"] - values["gradcampp"]
    assert int(rows[0]["n"]) == np.isfinite(d).sum() == 8
    assert float(rows[0]["difference"]) == pytest.approx(np.nanmean(d), abs=1e-6)


def test_a_real_run_without_metrics_is_not_a_metrics_run(real):
    _, plain = real
    s = load_scalars(RunTable([plain], ["gradcam", "gradcampp"]), ["gradcam", "gradcampp"])
    assert not s.has_metrics and np.isfinite(s.values["gradcam"]["entropy"]).all()
    out = build_report([plain], plain.parent / "plain-report", resamples=200)
    text = _text(out["report.md"])
    assert "Faithfulness was not measured (run without --metrics): no ranking." in text
    assert "Ranking robustness across metrics" not in text and "curves.png" not in out


def test_mean_road_curves_are_plotted_from_the_table(boxed):
    import pyarrow.parquet as pq

    from camscope.report.plots import curve_sums, plot_curves

    run, out = boxed
    sums = curve_sums(RunTable([run], list(METHODS)), METHODS)
    table = pq.read_table(run / "results", columns=["method", "road_morf", "road_morf_curve",
                                                     "road_lerf_curve"]).to_pylist()  # fmt: skip
    for m in METHODS:
        rows = [r for r in table if r["method"] == m]
        for kind in ("road_morf", "road_lerf"):
            total, count = sums[m][kind]
            by_hand = np.zeros(9)
            for r in rows:  # one image at a time, float64
                by_hand += np.asarray(r[f"{kind}_curve"], dtype=np.float64)
            assert count == len(rows) == N
            assert total == pytest.approx(by_hand, rel=1e-9)
        # the mean of the mean MoRF curve is the mean ROAD MoRF of the summary
        mean_curve = sums[m]["road_morf"][0] / N
        assert mean_curve.mean() == pytest.approx(np.mean([r["road_morf"] for r in rows]), rel=1e-5)
    fig = plot_curves(sums)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["Deletion (lower AUC is better)", "Insertion (higher AUC is better)",
                      "ROAD MoRF (lower is better)", "ROAD LeRF (higher is better)"]  # fmt: skip
    assert list(fig.axes[2].lines[0].get_xdata()) == pytest.approx(list(M.ROAD_FRACTIONS))
    for name in ("report.md", "report.html"):
        assert "Mean deletion, insertion and ROAD curves" in _text(out[name])
    # without ROAD curves (a --no-road run) the two panels of before
    del_ins = {m: {k: v for k, v in kinds.items() if not k.startswith("road")}
               for m, kinds in sums.items()}  # fmt: skip
    assert len(plot_curves(del_ins).axes) == 2
