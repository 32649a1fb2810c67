"""Tests for camscope.report.legacy (the report of camscope.evaluate)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from html_browser import Collect as _Collect
from html_browser import browser_check
from html_browser import chromium as _chromium
from matplotlib.figure import Figure
from PIL import Image

from camscope import metrics as M
from camscope.report import legacy as R

METHODS = ["gradcam", "ablationcam", "scorecam"]


def _entry(i: int, *, truth: int | None = None, top1: int = 1) -> R.ImageEntry:
    return R.ImageEntry(
        name=f"img{i}",
        file=f"/data/img{i}.png",
        target_index=top1,
        target_name=f"class {top1}",
        top1_index=top1,
        top1_name=f"class {top1}",
        top1_prob=0.5,
        truth_index=truth,
        truth_name=None if truth is None else f"class {truth}",
        rgb=np.full((16, 16, 3), 40 * i % 255, dtype=np.uint8),
    )


def _values(**overrides) -> dict[str, np.ndarray]:
    base = {
        "average_drop": np.array([0.2, 0.3, 0.4]),
        "increase": np.array([0.0, 1.0, 0.0]),
        "deletion_auc": np.array([0.1, 0.2, 0.3]),
        "insertion_auc": np.array([0.5, 0.6, 0.7]),
        "empty": np.zeros(3),
        "share_above_half": np.array([0.1, 0.1, 0.1]),
    }
    base.update({k: np.asarray(v, dtype=np.float64) for k, v in overrides.items()})
    return base


def _agree(pearson, iou) -> dict[str, np.ndarray]:
    return {"pearson": np.asarray(pearson, float), "top20_iou": np.asarray(iou, float)}


def scenario() -> R.ReportData:
    """Image 0: S empty, G/A agree strongly. Image 1: S off-region, A spread. Image 2: wrong."""
    values = {
        "gradcam": _values(deletion_auc=[0.05, 0.2, 0.3], share_above_half=[0.1, 0.1, 0.2]),
        "ablationcam": _values(share_above_half=[0.1, 0.45, 0.2], insertion_auc=[0.5, 0.9, 0.7]),
        "scorecam": _values(empty=[1, 0, 0], share_above_half=[0.0, 0.12, 0.2]),
    }
    agreement = {
        ("gradcam", "ablationcam"): _agree([0.9, 0.5, 0.5], [0.8, 0.6, 0.5]),
        ("gradcam", "scorecam"): _agree([0.0, 0.1, 0.5], [0.0, 0.1, 0.5]),
        ("ablationcam", "scorecam"): _agree([0.0, 0.2, 0.5], [0.0, 0.05, 0.5]),
    }
    images = [_entry(0, truth=1), _entry(1), _entry(2, truth=7)]
    return R.ReportData(
        title="t",
        run={"model": "tiny", "layer": "conv2"},
        methods=METHODS,
        images=images,
        values=values,
        agreement=agreement,
        steps=10,
    )


def test_image_findings_follow_the_numbers():
    data = scenario()
    f0 = " ".join(R.image_findings(data, 0))
    assert "which is correct" in f0
    assert "The map of ScoreCAM is empty (all zero)" in f0
    assert "Grad-CAM and AblationCAM agree strongly (Pearson r = 0.90, top-20% IoU = 0.80)" in f0
    assert "ScoreCAM agree" not in f0  # the empty map is not compared
    assert "Most faithful by deletion (lowest AUC): Grad-CAM with 0.050" in f0
    assert "spread" not in f0 and "off the region" not in f0

    f1 = " ".join(R.image_findings(data, 1))
    assert "ground truth is unknown" in f1
    assert "Grad-CAM and ScoreCAM agree weakly (Pearson r = 0.10" in f1
    assert "Grad-CAM and AblationCAM agree moderately" in f1
    assert "The map of AblationCAM is spread: 45% of its pixels are above 0.5" in f1
    assert "The top-20% region of ScoreCAM is off the region the others share" in f1
    assert "Most faithful by insertion (highest AUC): AblationCAM with 0.900" in f1


def test_close_aucs_are_not_ranked():
    data = scenario()
    data.values["scorecam"]["deletion_auc"][1] = 0.195  # within 0.01 of Grad-CAM's 0.2
    data.values["ablationcam"]["deletion_auc"][1] = 0.5
    f1 = " ".join(R.image_findings(data, 1))
    assert (
        "By deletion (lowest AUC) no single map is clearly most faithful: Grad-CAM (0.200) and "
        "ScoreCAM (0.195) lie within 0.01 of the best; AblationCAM 0.500." in f1
    )
    data.values["scorecam"]["deletion_auc"][1] = 0.18
    assert "Most faithful by deletion (lowest AUC): ScoreCAM with 0.180" in " ".join(
        R.image_findings(data, 1)
    )

    f2 = " ".join(R.image_findings(data, 2))
    assert "which is wrong: the ground truth is class 7" in f2
    assert "spread" not in f2 and "off the region" not in f2
    # all three deletion AUCs are 0.3: nobody is named most faithful by deletion
    assert "By deletion (lowest AUC) no single map is clearly most faithful" in f2
    assert "Most faithful by deletion" not in f2


def test_thresholds_are_respected_and_stated():
    data = scenario()
    data.thresholds = R.Thresholds(strong_agreement=0.95)
    assert "agree strongly" not in " ".join(R.image_findings(data, 0))
    md = R.render_markdown(scenario())
    assert "Pearson r ≥ 0.7 is strong, ≤ 0.3 weak" in md
    assert "mean |Spearman| after the last step < 0.5" in md


def _ranking_data(n: int = 12) -> R.ReportData:
    rng = np.random.default_rng(0)
    g = rng.uniform(0.1, 0.3, n)
    a = g + 0.1 + rng.normal(0, 0.01, n)  # clearly worse than Grad-CAM
    s = a + rng.normal(0, 0.05, n)  # indistinguishable from AblationCAM
    values = {}
    for m, dele in zip(METHODS, (g, a, s), strict=True):
        values[m] = {
            "average_drop": dele,
            "increase": (rng.random(n) > 0.5).astype(float),
            "deletion_auc": dele,
            "insertion_auc": 1 - dele,
            "empty": np.zeros(n),
            "share_above_half": np.full(n, 0.1),
        }
    agreement = {
        (x, y): _agree(np.full(n, 0.5), np.full(n, 0.5))
        for x, y in [
            ("gradcam", "ablationcam"),
            ("gradcam", "scorecam"),
            ("ablationcam", "scorecam"),
        ]
    }
    return R.ReportData(
        title="rank",
        run={},
        methods=METHODS,
        images=[_entry(i) for i in range(n)],
        values=values,
        agreement=agreement,
        steps=10,
    )


def test_conclusion_ranks_with_ci_and_says_what_is_not_significant():
    data = _ranking_data()
    md = R.render_markdown(data)
    conclusion = md.split("## Conclusion")[1]
    dele = data.values["gradcam"]["deletion_auc"]
    mean, lo, hi = M.mean_ci(dele)
    assert f"1. Grad-CAM {mean:.3f} [95% CI {lo:.3f}, {hi:.3f}]" in conclusion
    d_ga = M.paired_difference(dele, data.values["ablationcam"]["deletion_auc"])
    assert d_ga.significant
    d_as = M.paired_difference(
        data.values["ablationcam"]["deletion_auc"], data.values["scorecam"]["deletion_auc"]
    )
    assert not d_as.significant
    line = next(x for x in conclusion.splitlines() if x.startswith("- Grad-CAM − AblationCAM"))
    assert line.endswith(": significant.")
    pair = re.compile(r"- (AblationCAM − ScoreCAM|ScoreCAM − AblationCAM).*not significant")
    assert pair.search(conclusion)
    assert "Grad-CAM is best on Deletion AUC, significantly ahead of every other method" in md
    assert "Significant first places" in md and "Grad-CAM on Average Drop" in md


def test_conclusion_without_differences_claims_nothing_significant():
    data = _ranking_data()
    for m in METHODS:
        data.values[m] = dict(data.values["gradcam"])
    md = R.render_markdown(data)
    assert "No method is significantly ahead of all others on any metric." in md
    assert ": significant." not in md


def test_summary_table_matches_mean_ci():
    data = _ranking_data()
    data.sanity = {
        "gradcam": [M.SanityStep.from_values("fc", torch.tensor([0.1, -0.2]), 2, 2)],
        "scorecam": [M.SanityStep.from_values("fc", torch.tensor([0.9, 0.96]), 2, 2)],
    }
    data.sanity_images = 2
    header, rows = R.summary_table(data)
    assert header[:3] == ["method", "n", "average_drop_pct_mean"]
    assert header[3:5] == ["average_drop_pct_ci_low", "average_drop_pct_ci_high"]
    by_method = {r[0]: dict(zip(header, r, strict=True)) for r in rows}
    mean, lo, hi = M.mean_ci(data.values["gradcam"]["average_drop"] * 100)
    g = by_method["gradcam"]
    assert float(g["average_drop_pct_mean"]) == pytest.approx(mean, rel=1e-5)
    assert float(g["average_drop_pct_ci_low"]) == pytest.approx(lo, rel=1e-5)
    assert float(g["insertion_auc_ci_high"]) == pytest.approx(
        M.mean_ci(data.values["gradcam"]["insertion_auc"])[2], rel=1e-5
    )
    assert g["sanity_pass"] == "pass" and by_method["scorecam"]["sanity_pass"] == "fail"
    assert by_method["ablationcam"]["sanity_pass"] == ""
    md = R.render_markdown(data)
    assert "Grad-CAM: after randomising only fc" in md and "passes" in md
    assert "ScoreCAM: after randomising only fc" in md and "fails" in md
    g_mean, g_lo, g_hi = (100 * x for x in M.mean_ci(data.values["gradcam"]["average_drop"]))
    assert f"| Grad-CAM | 12 | {g_mean:.1f} [{g_lo:.1f}, {g_hi:.1f}] |" in md
    assert "Sanity: final mean \\|Spearman\\| |" in md  # pipes escaped in the table
    assert "| 0.15 (pass) |" in md and "| 0.93 (fail) |" in md and "| not run |" in md


def test_plots_are_labelled():
    data = scenario()
    curves = {
        m: (np.linspace(1, 0, 11)[None].repeat(3, 0), np.linspace(0, 1, 11)[None]) for m in METHODS
    }
    fig = R.plot_curves(curves)
    assert isinstance(fig, Figure)
    left, right = fig.axes
    assert left.get_xlabel() == "share of pixels deleted" and "probability" in left.get_ylabel()
    legend = [t.get_text() for t in left.get_legend().get_texts()]
    assert legend[0] == "Grad-CAM (AUC 0.500, n=3)"
    dist = R.plot_distributions(data.values)
    assert [ax.get_ylabel() for ax in dist.axes] == [
        "Average Drop (%)", "Increase in Confidence (%)", "Deletion AUC", "Insertion AUC"
    ]  # fmt: skip
    assert [t.get_text() for t in dist.axes[0].get_xticklabels()] == [
        "Grad-CAM", "AblationCAM", "ScoreCAM"
    ]  # fmt: skip


def _page(tmp_path: Path) -> tuple[Path, R.ReportData]:
    data = scenario()
    data.images[1].name = 'evil <b>"name"</b> & co'
    data.notes = ["<script>alert(1)</script>"]
    for i, img in enumerate(data.images):
        for m in METHODS:
            if (i, m) == (2, "scorecam"):
                img.overlays[m] = tmp_path / "missing.png"  # shown as "not available"
                continue
            path = tmp_path / f"{m}_{i}.png"
            Image.fromarray(np.full((16, 16, 3), 30 * i, np.uint8)).save(path)
            img.overlays[m] = path
    plot = tmp_path / "curves.png"
    fig = R.plot_curves({"gradcam": (np.ones((2, 3)), np.zeros((2, 3)))})
    fig.savefig(plot)
    data.plots = {"Curves <1>": plot}
    out = tmp_path / "report.html"
    R.write_html(out, data)
    return out, data


def test_html_is_self_contained_and_escaped(tmp_path):
    out, _ = _page(tmp_path)
    text = out.read_text(encoding="utf-8")
    parser = _Collect()
    parser.feed(text)
    assert parser.scripts == 0 and parser.links == []
    assert len(parser.imgs) == 1 + 3 * (1 + 3) - 1  # plot + per image input and 3 overlays
    assert all(
        src.startswith(("data:image/png;base64,", "data:image/jpeg;base64,")) for src in parser.imgs
    )
    assert "http://" not in text and "https://" not in text
    assert "<script>alert" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "evil &lt;b&gt;&quot;name&quot;&lt;/b&gt; &amp; co" in text
    assert "image not available" in text
    assert "Curves &lt;1&gt;" in text


def test_html_renders_in_headless_chromium(tmp_path):
    out, _ = _page(tmp_path)
    result = browser_check(out, tmp_path)
    assert result["images"] == 12
    assert result["broken"] == []
    assert result["errors"] == [] and result["console"] == []


def test_browser_probe_detects_a_broken_image(tmp_path):
    """The harness itself works: an undecodable image and a blocked external one are caught."""
    if _chromium() is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium); HTML not rendered")
    page = tmp_path / "bad.html"
    page.write_text(
        '<!DOCTYPE html><html><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{R.CSP}"><title>x</title></head>'
        '<body><img alt="junk" src="data:image/png;base64,AAAA">'
        '<img alt="external" src="https://example.invalid/x.png"></body></html>',
        encoding="utf-8",
    )
    result = browser_check(page, tmp_path)
    assert sorted(result["broken"]) == ["external", "junk"]
    assert any("CSP" in e for e in result["errors"])
