"""Tests for camscope.report.build_report on synthetic results tables (docs/DESIGN.md schema).

Numbers are checked against the table read back with pyarrow and statistics computed by hand;
sizes and caps against synthetic runs of 5,000 images.
"""

from __future__ import annotations

import csv
import itertools
import math
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from html_browser import Collect, browser_check
from PIL import Image
from synthetic_runs import make_run, schema

from camscope import metrics as M
from camscope.report import (
    GALLERY_CAP,
    MAX_BYTES,
    METRICS,
    RunTable,
    Scalars,
    Thresholds,
    build_report,
)
from camscope.report.text import image_findings

METHODS = ("gradcam", "ablationcam", "scorecam")
SANITY = {
    "gradcam": ([0.1, -0.2, 0.05], [False, False, False]),
    "ablationcam": ([0.1, 0.0, 0.0], [False, True, True]),  # 2 of 3 randomised maps vanish
}


def _csv(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="") as fh:
        return {row["method"]: row for row in csv.DictReader(fh)}


def _parse(path: Path) -> Collect:
    parser = Collect()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    run = make_run(tmp_path_factory.mktemp("small") / "run", 12, failures=2,
                   empty={"scorecam": 2}, sanity=SANITY, part_rows=5)  # fmt: skip
    return run, build_report([run], run, title="<script>alert(1)</script>", resamples=2000)


@pytest.fixture(scope="module")
def large(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    run = make_run(tmp_path_factory.mktemp("large") / "run", 5000, failures=120,
                   empty={"scorecam": 40}, part_rows=500)  # fmt: skip
    return run, build_report([run], run, resamples=500)


def test_summary_matches_the_table(small):
    run, out = small
    table = pq.read_table(run / "results").to_pandas()
    rows = _csv(out["summary.csv"])
    assert list(rows) == list(METHODS)
    for m in METHODS:
        sub = table[table["method"] == m]
        assert int(rows[m]["n"]) == len(sub) == 12
        assert int(rows[m]["empty_maps"]) == int(sub["empty"].sum())
        for spec in METRICS:
            k = f"{spec.key}{'_pct' if spec.unit == '%' else ''}"
            values = sub[spec.key].astype(np.float64).to_numpy()
            values = values[np.isfinite(values)]
            if spec.kind == "localisation" or spec.key == "deletion_blur_auc":  # not measured
                assert values.size == 0 and rows[m][f"{k}_mean"] == ""
                continue
            mean, lo, hi = (float(rows[m][f"{k}_{x}"]) for x in ("mean", "low", "high"))
            assert mean == pytest.approx(values.mean() * spec.scale, rel=1e-5)
            low, high = (v * spec.scale for v in spec.bounds)
            assert low <= lo <= mean <= hi <= high  # inside the metric's range
            if spec.interval == "wilson":  # textbook Wilson, float64, by hand
                k_, n, z = values.sum(), len(values), 1.959963984540054
                c = (k_ / n + z * z / (2 * n)) / (1 + z * z / n)
                h = z / (1 + z * z / n) * math.sqrt(k_ / n * (1 - k_ / n) / n + z * z / (4 * n * n))
                assert (lo, hi) == pytest.approx((100 * (c - h), 100 * (c + h)), abs=1e-3)
            else:
                assert (
                    values.min() * spec.scale - 1e-4 <= lo
                    and hi <= values.max() * spec.scale + 1e-4
                )


def test_sanity_empty_maps_are_counted_and_fail(small):
    run, out = small
    rows = _csv(out["summary.csv"])
    assert rows["ablationcam"]["sanity_outcome"] == "empty"
    assert rows["ablationcam"]["sanity_empty_randomised"] == "2"
    assert rows["gradcam"]["sanity_outcome"] == "pass"
    assert rows["scorecam"]["sanity_outcome"] == "not run"
    for name in ("report.md", "report.html"):
        text = out[name].read_text(encoding="utf-8")
        assert "2 of 3 randomised maps empty" in text
        lines = text.replace("<li>", "\n").splitlines()
        line = next(ln for ln in lines if "AblationCAM: after randomising" in ln)
        assert "fail" in line and "pass" not in line


def test_html_is_self_contained_bounded_and_escaped(small):
    _, out = small
    text = out["report.html"].read_text(encoding="utf-8")
    page = _parse(out["report.html"])
    assert page.scripts == 0 and "<script>alert" not in text and "&lt;script&gt;" in text
    assert all(src.startswith(("data:image/png;base64,", "data:image/jpeg;base64,"))
               for src in page.imgs)  # fmt: skip
    assert page.links and all(":" not in link for link in page.links)  # relative only
    assert set(page.links) == {"metrics.csv", "results"}
    assert "http://" not in text and "https://" not in text
    assert "2 inputs failed" in text and "cannot identify image file" in text
    # every gallery thumbnail is a small JPEG made from the input + the raw map
    thumbs = [s for s in page.imgs if s.startswith("data:image/jpeg")]
    assert thumbs
    import base64
    import io

    with Image.open(io.BytesIO(base64.b64decode(thumbs[1].split(",", 1)[1]))) as im:
        assert im.format == "JPEG" and im.size == (128, 128)


def test_small_n_wording_and_ties(tmp_path):
    # 12 images: Increase is 66.7 % for all three methods (a three-way tie)
    tie = build_report([make_run(tmp_path / "tie", 12)], tmp_path / "tie", resamples=2000)
    md = tie["report.md"].read_text(encoding="utf-8")
    inc = md[md.index("**Increase in Confidence**") :].split("\n\n")[0]
    assert "tie on the best mean (66.7%): no method is significantly best" in inc
    assert "is best" not in inc and "best mean on" not in inc
    # 5 images: intervals not meaningful, no order claimed, nothing significant
    few = build_report([make_run(tmp_path / "few", 5, shift=0.3)], tmp_path / "few",
                       resamples=2000)  # fmt: skip
    md = few["report.md"].read_text(encoding="utf-8")
    assert "interval not meaningful" in md and "no order is claimed" in md
    assert ": significant." not in md and "is best" not in md
    assert _csv(few["summary.csv"])["gradcam"]["intervals_meaningful"] == "False"


def test_large_run_report_is_bounded(large):
    run, out = large
    size = out["report.html"].stat().st_size
    assert size < MAX_BYTES
    text = out["report.html"].read_text(encoding="utf-8")
    sections = re.split(r"<h3>", text.split("<h2>Gallery</h2>")[1].split("<h2>")[0])[1:]
    assert len(sections) == 4  # disagree, unfaithful, empty, sample
    for sec in sections:
        assert 0 < sec.count('<div class="card">') <= GALLERY_CAP
    assert "120 inputs failed" in text and "70 more in the results table" in text
    md = out["report.md"].read_text(encoding="utf-8")
    gallery = md.split("## Gallery")[1].split("## Failed inputs")[0]
    assert sum(ln.startswith("- `") for ln in gallery.splitlines()) <= 4 * GALLERY_CAP
    assert len(md) < 200_000
    assert int(_csv(out["summary.csv"])["gradcam"]["n"]) == 5000


def test_shards_merge_into_the_report_of_one_folder(tmp_path):
    inputs = tmp_path / "inputs"
    one = make_run(tmp_path / "one", 30, empty={"scorecam": 3}, images=inputs)
    a = make_run(tmp_path / "a", 14, empty={"scorecam": 3}, images=inputs)
    b = make_run(tmp_path / "b", 16, start=14, images=inputs)
    whole = build_report([one], tmp_path / "r1", resamples=1000)
    merged = build_report([a, b], tmp_path / "r2", resamples=1000)
    assert whole["summary.csv"].read_text() == merged["summary.csv"].read_text()

    def body(path: Path) -> str:  # everything but the title and the run folders
        text = path.read_text(encoding="utf-8")
        return text[text.index("## Summary") :]

    assert body(whole["report.md"]) == body(merged["report.md"])
    assert "30 explained" in merged["report.md"].read_text(encoding="utf-8")


def test_streamed_batches_are_the_rows_read(tmp_path):
    run = make_run(tmp_path / "run", 4, methods=("gradcam",), part_rows=4)
    # a later part re-writes image 0 (new AUC) and records a failure of image 1 that also has an
    # ok row: the later ok row wins, the failure is dropped
    first = pq.read_table(next((run / "results").glob("part-*.parquet"))).to_pylist()
    redo = dict(first[0], deletion_auc=0.875)
    failed = {k: None for k in first[1]} | {"key": first[1]["key"], "name": first[1]["name"],
              "status": "failed", "file": first[1]["file"], "error": "x"}  # fmt: skip
    later = pa.Table.from_pylist([redo, failed], schema=schema(["gradcam"]))
    pq.write_table(later, run / "results" / "part-zzzz-000000.parquet")
    other = make_run(tmp_path / "other", 3, methods=("gradcam",), start=10, part_rows=2)
    source = RunTable([run, other], ["gradcam"])
    cols = ["name", "status", "deletion_auc", "deletion_curve"]
    table = source.read(cols)
    assert table.num_rows == 7 and set(table.column("status").to_pylist()) == {"ok"}
    rows = table.to_pylist()
    assert [r["deletion_auc"] for r in rows if r["name"] == first[0]["name"]] == [0.875]
    # streaming gives exactly the rows of read(), in the same order, one part at a time
    streamed = pa.concat_tables(list(source.batches(cols)))
    assert streamed.select([*cols, "run_dir"]).equals(table.select([*cols, "run_dir"]))


def test_report_without_metrics(tmp_path):
    run = make_run(tmp_path / "run", 6, metrics=False)
    out = build_report([run], run, resamples=500)
    md = out["report.md"].read_text(encoding="utf-8")
    assert "Faithfulness was not measured" in md and "curves.png" not in out
    assert "### Where the methods disagree most" in md and "### Random sample" in md


def test_missing_input_file_still_shows_the_map(tmp_path):
    run = make_run(tmp_path / "run", 3, methods=("gradcam", "scorecam"))
    for f in (tmp_path / "inputs").iterdir():
        f.unlink()
    text = build_report([run], run, resamples=500)["report.html"].read_text(encoding="utf-8")
    assert "not available" in text and "data:image/jpeg" in text


def test_report_renders_in_headless_chromium(small, tmp_path):
    _, out = small
    result = browser_check(out["report.html"], tmp_path)
    assert result["images"] == len(_parse(out["report.html"]).imgs)
    assert result["broken"] == [] and result["errors"] == [] and result["console"] == []


def test_statistics_module_is_what_the_report_uses(small):
    # the report's Increase interval is the library's Wilson interval on the same outcomes
    run, out = small
    table = pq.read_table(run / "results", columns=["method", "increase"]).to_pandas()
    outcomes = table[table["method"] == "gradcam"]["increase"].astype(float)
    iv = M.proportion_interval(outcomes)
    row = _csv(out["summary.csv"])["gradcam"]
    assert float(row["increase_pct_low"]) == pytest.approx(100 * iv.low, abs=1e-3)


# ---------------------------------------------------------------------------- per-image prose


def _scalars() -> Scalars:
    """Image 0: ScoreCAM empty, G/A agree strongly. Image 1: S off-region, A spread, no truth.
    Image 2: wrong prediction, all deletion AUCs equal."""

    def vals(**kw):
        base = {"average_drop": [0.2, 0.3, 0.4], "increase": [0, 1, 0], "empty": [0, 0, 0],
                "deletion_auc": [0.1, 0.2, 0.3], "insertion_auc": [0.5, 0.6, 0.7],
                "share_above_half": [0.1, 0.1, 0.1]} | kw  # fmt: skip
        return {k: np.asarray(v, dtype=np.float64) for k, v in base.items()}

    pairs_g = {
        "pearson__ablationcam": [0.9, 0.5, 0.5],
        "top20_iou__ablationcam": [0.8, 0.6, 0.5],
        "pearson__scorecam": [0.0, 0.1, 0.5],
        "top20_iou__scorecam": [0.0, 0.1, 0.5],
    }
    pairs_a = {"pearson__scorecam": [0.0, 0.2, 0.5], "top20_iou__scorecam": [0.0, 0.05, 0.5]}
    values = {
        "gradcam": vals(deletion_auc=[0.05, 0.2, 0.3], share_above_half=[0.1, 0.1, 0.2],
                        **pairs_g),
        "ablationcam": vals(share_above_half=[0.1, 0.45, 0.2], insertion_auc=[0.5, 0.9, 0.7],
                            **pairs_a),
        "scorecam": vals(empty=[1, 0, 0], share_above_half=[0.0, 0.12, 0.2]),
    }  # fmt: skip
    images = pa.table({
        "key": ["a", "b", "c"], "name": ["i0", "i1", "i2"], "file": ["/x/0", "/x/1", "/x/2"],
        "top1_index": [1, 1, 1], "top1_name": ["cat"] * 3, "top1_prob": [0.5] * 3,
        "target_index": [1, 1, 1], "target_name": ["cat"] * 3, "truth_index": [1, None, 7],
        "run_dir": ["r"] * 3,
    })  # fmt: skip
    rows = {m: np.arange(3) for m in METHODS}
    failures = pa.table({"name": [], "file": [], "error": [], "run_dir": []})
    return Scalars(list(METHODS), images, values, rows, failures, True)


def test_image_findings_follow_the_numbers():
    s, t = _scalars(), Thresholds()
    f0 = " ".join(f.text for f in image_findings(s, 0, t))
    assert "which is correct" in f0
    assert "Empty map (no spatial variation), left out of the comparisons: ScoreCAM" in f0
    assert "Grad-CAM and AblationCAM agree strongly (Pearson r = 0.90, top-20% IoU = 0.80)" in f0
    assert "ScoreCAM agree" not in f0  # the empty map is not compared
    assert "Most faithful by deletion (lowest AUC): Grad-CAM (0.050)" in f0
    assert "spread" not in f0 and "off the region" not in f0
    f1 = " ".join(f.text for f in image_findings(s, 1, t))
    assert "ground truth is unknown" in f1
    assert "Grad-CAM and ScoreCAM agree weakly (Pearson r = 0.10" in f1
    assert "Grad-CAM and AblationCAM agree moderately" in f1
    assert "The map of AblationCAM is spread: 45% of its pixels are above 0.5" in f1
    assert "The top-20% region of ScoreCAM is off the region the others share" in f1
    assert "Most faithful by insertion (highest AUC): AblationCAM (0.900)" in f1
    f2 = " ".join(f.text for f in image_findings(s, 2, t))
    assert "which is wrong (truth: class index 7)" in f2
    assert "spread" not in f2 and "off the region" not in f2
    assert "By deletion (lowest AUC) no map is clearly most faithful" in f2  # all 0.3
    strict = " ".join(f.text for f in image_findings(s, 0, Thresholds(strong_agreement=0.95)))
    assert "agree strongly" not in strict


def test_browser_probe_detects_a_broken_image(tmp_path):
    """The harness itself works: an undecodable image and a blocked external one are caught."""
    from html_browser import chromium

    from camscope.report import CSP

    if chromium() is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium); HTML not rendered")
    page = tmp_path / "bad.html"
    page.write_text(
        '<!DOCTYPE html><html><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}"><title>x</title></head>'
        '<body><img alt="junk" src="data:image/png;base64,AAAA">'
        '<img alt="external" src="https://example.invalid/x.png"></body></html>',
        encoding="utf-8",
    )
    result = browser_check(page, tmp_path)
    assert sorted(result["broken"]) == ["external", "junk"]
    assert any("CSP" in e for e in result["errors"])


def test_links_only_to_files_that_exist(tmp_path):
    run = make_run(tmp_path / "run", 3, methods=("gradcam",), metrics=False)
    page = _parse(build_report([run], run, resamples=200)["report.html"])
    assert page.links == ["results"]


def test_comparisons_csv_lists_every_pair_corrected(small):
    run, out = small
    table = pq.read_table(run / "results").to_pandas()
    with out["comparisons.csv"].open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    measured = [s for s in METRICS if s.kind != "localisation"  # no --boxes here
                and s.key != "deletion_blur_auc"]  # nor --blur-deletion  # fmt: skip
    assert len(rows) == len(measured) * 3  # k(k-1)/2 = 3 pairs per metric
    for row in rows:
        spec = next(s for s in METRICS if s.key == row["metric"])
        per = {m: table[table["method"] == m].set_index("name")[spec.key].astype(float)
               for m in (row["method_a"], row["method_b"])}  # fmt: skip
        diff = (per[row["method_a"]] - per[row["method_b"]]).dropna().to_numpy()
        assert float(row["difference"]) == pytest.approx(diff.mean() * spec.scale, abs=1e-4)
        assert int(row["n"]) == len(diff)
        assert row["correction"] == M.CORRECTION
        low, high = float(row["low"]), float(row["high"])
        u_low, u_high = float(row["uncorrected_low"]), float(row["uncorrected_high"])
        assert low <= u_low + 1e-9 and u_high <= high + 1e-9  # corrected is never narrower
        assert row["significant"] == str(low > 0 or high < 0)


# ------------------------------------------------------------- comparisons matrix, robustness


def _metric_scalars(values: dict[str, dict[str, np.ndarray]]) -> Scalars:
    """Scalars of len(values[m][k]) images: ``values`` method -> metric key -> per-image values."""
    methods = list(values)
    n = len(next(iter(values[methods[0]].values())))
    cols = {"empty": np.zeros(n), "share_above_half": np.full(n, 0.1), "seconds": np.zeros(n)}
    full = {m: cols | {k: np.full(n, np.nan) for k in (s.key for s in METRICS)} | v
            for m, v in values.items()}  # fmt: skip
    images = pa.table({
        "key": [f"k{i}" for i in range(n)], "name": [f"i{i}" for i in range(n)],
        "file": [f"/x/{i}" for i in range(n)], "top1_index": [1] * n, "top1_name": ["cat"] * n,
        "top1_prob": [0.5] * n, "target_index": [1] * n, "target_name": ["cat"] * n,
        "truth_index": [1] * n, "run_dir": ["r"] * n,
    })  # fmt: skip
    failures = pa.table({"name": [], "file": [], "error": [], "run_dir": []})
    rows = {m: np.arange(n) for m in methods}
    return Scalars(methods, images, full, rows, failures, True)


def _document(s: Scalars):
    from camscope.report.context import ReportContext
    from camscope.report.data import summarise
    from camscope.report.outline import build_document

    summary = summarise(s, resamples=1000)
    ctx = ReportContext("t", [], [], s, summary, steps=8)
    return summary, build_document(ctx)


def _findings(doc, key: str) -> list:
    return [f for b in doc.section(key).blocks for f in getattr(b, "findings", [])]


def test_the_ranking_depends_on_the_metric_is_said(tmp_path):
    rng = np.random.default_rng(0)
    n = 60
    image = rng.uniform(0.2, 0.5, n)

    def noisy(shift):
        return np.clip(image + shift + rng.normal(0, 0.03, n), 0, 1)

    # Average Drop (lower is better) puts Grad-CAM ahead; Deletion AUC (lower) puts ScoreCAM ahead
    s = _metric_scalars({
        "gradcam": {"average_drop": noisy(0.0), "deletion_auc": noisy(0.2)},
        "ablationcam": {"average_drop": noisy(0.1), "deletion_auc": noisy(0.1)},
        "scorecam": {"average_drop": noisy(0.2), "deletion_auc": noisy(0.0)},
    })  # fmt: skip
    summary, doc = _document(s)
    assert [m.key for m in summary.measured] == ["average_drop", "deletion_auc"]
    tau = summary.metric_agreement[("average_drop", "deletion_auc")]
    assert tau.mean == pytest.approx(-1.0) and tau.high < 0
    found = _findings(doc, "robustness")
    kinds = [f.kind for f in found]
    assert "robust" not in kinds and "no_winner" in kinds
    depends = [f.text for f in found if f.kind == "depends"]
    # every pair is reversed; Grad-CAM's two reversals share their orders, so one sentence
    assert depends == [
        "On these images the ranking of Grad-CAM and each of AblationCAM and ScoreCAM depends "
        "on the metric: Grad-CAM is ahead on Average Drop, each of them on Deletion AUC.",
        "On these images the ranking of AblationCAM and ScoreCAM depends on the metric: "
        "AblationCAM is ahead on Average Drop, ScoreCAM on Deletion AUC.",
    ]
    # one matrix per metric: 3 x 3, diagonal "self", colours follow the direction
    matrices = [b for b in doc.section("rankings").blocks if b.kind == "matrix"]
    assert len(matrices) == 2
    drop = matrices[0]
    assert drop.labels == ["Grad-CAM", "AblationCAM", "ScoreCAM"]
    assert [drop.rows[i][i].tone for i in range(3)] == ["self"] * 3
    assert drop.rows[0][2].tone == "better" and drop.rows[2][0].tone == "worse"
    md = _render_both(doc)
    assert "| Grad-CAM | — |" in md and "better" in md


def test_merged_reversals_lose_nothing_and_share_sentences():
    from camscope.report.text import _merged

    rng = np.random.default_rng(3)
    methods = [f"m{i}" for i in range(9)]
    orders = [("A",), ("B",), ("A", "C"), ("D",)]
    for _ in range(50):
        pairs = [p for p in itertools.combinations(methods, 2) if rng.random() < 0.4]
        reversals = [(x, y, orders[rng.integers(2)], orders[2 + rng.integers(2)])
                     for x, y in pairs]  # fmt: skip
        merged = _merged(reversals, methods)
        expanded = set()
        for x, ys, ox, oy in merged:
            for y in ys:  # back to one reversal per pair, in the methods' order
                expanded.add((x, y, ox, oy) if methods.index(x) < methods.index(y) else
                             (y, x, oy, ox))  # fmt: skip
        assert expanded == set(reversals)
        assert sum(len(ys) for _, ys, _, _ in merged) == len(reversals)
        keys = [(x, ox, oy) for x, ys, ox, oy in merged if len(ys) > 1]
        assert len(keys) == len(set(keys))  # a hub's orders make one sentence, not two


def _render_both(doc) -> str:
    from camscope.report import render_html, render_markdown

    html = render_html(doc)
    assert '<td class="better"' in html and '<td class="worse"' in html
    return render_markdown(doc)


def test_a_winner_only_when_it_leads_on_every_metric():
    rng = np.random.default_rng(1)
    n = 60
    image = rng.uniform(0.2, 0.5, n)
    s = _metric_scalars({
        m: {"average_drop": image + d + rng.normal(0, 0.02, n),
            "insertion_auc": 1 - image - d + rng.normal(0, 0.02, n)}
        for m, d in (("gradcam", 0.0), ("ablationcam", 0.1), ("scorecam", 0.2))
    })  # fmt: skip
    _, doc = _document(s)
    found = _findings(doc, "robustness")
    robust = [f.text for f in found if f.kind == "robust"]
    assert robust == ["Grad-CAM is significantly ahead of every other method on every metric "
                      "(Average Drop and Insertion AUC)."]  # fmt: skip
    assert not [f for f in found if f.kind == "depends"]
    # the same methods with pure noise: no winner is named anywhere
    s = _metric_scalars({
        m: {"average_drop": image + rng.normal(0, 0.05, n),
            "insertion_auc": 1 - image + rng.normal(0, 0.05, n)}
        for m in ("gradcam", "ablationcam", "scorecam")
    })  # fmt: skip
    _, doc = _document(s)
    texts = " ".join(f.text for f in _findings(doc, "robustness") + _findings(doc, "rankings"))
    assert "ahead of every other method" not in texts and " is best" not in texts


def test_a_declared_metric_appears_everywhere_without_report_code(monkeypatch):
    """One MetricSpec in METRICS: summary, matrix, robustness, definitions pick it up."""
    import sys

    from camscope.report.data import MetricSpec

    extra = MetricSpec("toy", "Toy sparseness", "", 1.0, True, 3, family="sparse",
                       definition="Toy sparseness: the Gini index of the map.")  # fmt: skip
    setting = MetricSpec("toy_b", "Toy sparseness (Hoyer)", "", 1.0, True, 3, family="sparse")
    for name, module in list(sys.modules.items()):
        if name.startswith("camscope.report") and hasattr(module, "METRICS"):
            monkeypatch.setattr(module, "METRICS", (*METRICS, extra, setting))
    rng = np.random.default_rng(2)
    n = 40
    s = _metric_scalars({
        m: {"deletion_auc": rng.uniform(0.1, 0.3, n) + d,
            "toy": rng.uniform(0.2, 0.4, n) + d, "toy_b": np.full(n, np.nan)}
        for m, d in (("gradcam", 0.0), ("scorecam", 0.3))
    })  # fmt: skip
    summary, doc = _document(s)
    assert [m.key for m in summary.measured] == ["deletion_auc", "toy"]
    # a second setting of the same metric: its agreement is reported apart
    s.values["gradcam"]["toy_b"] = s.values["gradcam"]["toy"] + 0.01
    s.values["scorecam"]["toy_b"] = s.values["scorecam"]["toy"] - 0.02
    _, with_setting = _document(s)
    taus = {f.kind: f.text for f in _findings(with_setting, "robustness")}
    assert "orders of the methods by two settings of one metric" in taus["tau_settings"]
    assert "over 1 pair;" in taus["tau_settings"] and "over 2 pairs;" in taus["tau"]
    table = doc.section("summary").blocks[0]
    assert any(h.startswith("Toy sparseness, higher is better") for h in table.header)
    matrices = [b for b in doc.section("rankings").blocks if b.kind == "matrix"]
    assert [m.caption.split(":")[0] for m in matrices] == ["Deletion AUC", "Toy sparseness"]
    assert ("deletion_auc", "toy") in summary.metric_agreement
    depends = [f.text for f in _findings(doc, "robustness") if f.kind == "depends"]
    assert depends == ["On these images the ranking of Grad-CAM and ScoreCAM depends on the "
                       "metric: Grad-CAM is ahead on Deletion AUC, ScoreCAM on Toy "
                       "sparseness."]  # fmt: skip
    defined = " ".join(doc.section("definitions").blocks[0].items)
    assert "Toy sparseness: the Gini index of the map." in defined


def test_templates_are_package_data():
    """Every template file is matched by pyproject's package-data (so wheels ship them)."""
    import fnmatch

    import camscope.report

    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

    root = Path(camscope.report.__file__).parent
    config = tomllib.loads((root.parents[1] / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = config["tool"]["setuptools"]["package-data"]["camscope.report"]
    files = [p.relative_to(root).as_posix() for p in (root / "templates").iterdir()]
    assert files and all(any(fnmatch.fnmatch(f, pat) for pat in patterns) for f in files)
    assert any(d.startswith("jinja2") for d in config["project"]["dependencies"])


def test_a_descriptive_metric_is_summarised_not_ranked(monkeypatch):
    import sys

    from camscope.report.data import MetricSpec

    entropy = MetricSpec(
        "toy_entropy", "Toy entropy", "", 1.0, False, 3, bounds=(0.0, 20.0), ranked=False
    )
    for name, module in list(sys.modules.items()):
        if name.startswith("camscope.report") and hasattr(module, "METRICS"):
            monkeypatch.setattr(module, "METRICS", (*METRICS, entropy))
    rng = np.random.default_rng(3)
    s = _metric_scalars({
        m: {"deletion_auc": rng.uniform(0.1, 0.3, 30) + d, "toy_entropy": rng.uniform(5, 9, 30) - d}
        for m, d in (("gradcam", 0.0), ("scorecam", 0.3))
    })  # fmt: skip
    summary, doc = _document(s)
    assert [m.key for m in summary.ranked] == ["deletion_auc"]
    assert any(h.startswith("Toy entropy") for h in doc.section("summary").blocks[0].header)
    captions = [b.caption for b in doc.section("rankings").blocks if b.kind == "matrix"]
    assert [c.split(":")[0] for c in captions] == ["Deletion AUC"]
    assert "toy_entropy" in _comparisons_csv_text(summary)


def _comparisons_csv_text(summary) -> str:
    from camscope.report import comparisons_csv

    return comparisons_csv(summary)


def test_matrix_cells_never_show_a_coloured_zero():
    from camscope.report.text import comparison_matrix

    rng = np.random.default_rng(5)
    base = rng.uniform(0.2, 0.4, 30)
    spec = next(s for s in METRICS if s.key == "deletion_auc")  # 3 digits
    rk = M.rank_methods({"gradcam": base, "scorecam": base + 0.0003 + rng.normal(0, 1e-5, 30)},
                        higher_is_better=False, tolerance=0.0, resamples=1000)  # fmt: skip
    cell = comparison_matrix(spec, rk).rows[0][1]
    assert cell.tone == "better" and cell.text.startswith("-0.0003 [")
