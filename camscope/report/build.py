"""build_report: summary.csv, plots, report.html and report.md from one or more run folders.

Reads the results table through `camscope.report.source` only (scalar columns at once, maps and
curves streamed one part file at a time), so memory grows with the number of images only by the
per-image scalars; the pages are bounded (`camscope.report.gallery`, `camscope.report.html`).
Several run folders (shards of one dataset) merge into one report.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from camscope.io import atomic_write_bytes, runfolder, write_text
from camscope.metrics import RESAMPLES
from camscope.report.context import ReportContext
from camscope.report.data import (
    METRICS,
    Scalars,
    Summary,
    Thresholds,
    load_scalars,
    summarise,
)
from camscope.report.document import Figure
from camscope.report.gallery import GALLERY_CAP, make_cards, select_sections
from camscope.report.outline import build_document
from camscope.report.plots import curve_sums, figure_png, plot_curves, plot_distributions
from camscope.report.render import render_html, render_markdown
from camscope.report.source import RunFolderError, RunTable, read_run, read_sanity
from camscope.report.text import label, num
from camscope.report.variants import curve_facts, derive_settings

log = logging.getLogger("camscope")

__all__ = ["build_report", "comparisons_csv", "summary_csv"]


def summary_csv(s: Scalars, summary: Summary) -> str:
    """summary.csv: one row per method.

    Columns: method, n, then per metric of `METRICS` ``<key>_mean, <key>_low, <key>_high`` in
    display units (``<key>_pct_...`` for the % metrics: Average Drop, Increase, pointing game;
    empty when not measured) and ``<key>_interval`` (how it was made),
    intervals_meaningful (n >= the minimum n), empty_maps, empty_maps_pct, sanity_images,
    sanity_mean_abs_spearman, sanity_empty_randomised, sanity_outcome (pass / fail / empty /
    undecided), sanity_mean_abs_spearman_low / _high (its 95 % interval over images).
    """
    header = ["method", "n"]
    for spec in METRICS:
        k = f"{spec.key}{'_pct' if spec.unit == '%' else ''}"
        header += [f"{k}_mean", f"{k}_low", f"{k}_high", f"{spec.key}_interval"]
    header += ["intervals_meaningful", "empty_maps", "empty_maps_pct", "sanity_images"]
    header += ["sanity_mean_abs_spearman", "sanity_empty_randomised", "sanity_outcome"]
    header += ["sanity_mean_abs_spearman_low", "sanity_mean_abs_spearman_high"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for m in s.methods:
        n = summary.n[m]
        row: list[object] = [m, n]
        for spec in METRICS:
            iv = summary.intervals[m][spec.key]
            row += [_g(iv.mean * spec.scale), _g(iv.low * spec.scale), _g(iv.high * spec.scale)]
            row.append(iv.method)
        row += [n >= summary.min_n, summary.empty[m], _g(100 * summary.empty[m] / n if n else None)]
        v = summary.sanity.get(m)
        row += [v.n, _g(v.mean_abs), v.n_empty, v.outcome, _g(v.low), _g(v.high)] if v else [
            0, "", "", "not run", "", ""]  # fmt: skip
        writer.writerow(row)
    return buffer.getvalue()


def comparisons_csv(summary: Summary) -> str:
    """comparisons.csv: every paired difference of every metric, one row per pair.

    Columns: metric, method_a, method_b, n (images both have), difference (mean of a - b, display
    units), low, high, p_adjusted, significant (the corrected interval and p, `CORRECTION`),
    uncorrected_low, uncorrected_high, uncorrected_p, uncorrected_significant (per-pair
    percentile bootstrap, for reference only), correction.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["metric", "method_a", "method_b", "n", "difference", "low", "high",
                     "p_adjusted", "significant", "uncorrected_low", "uncorrected_high",
                     "uncorrected_p", "uncorrected_significant", "correction"])  # fmt: skip
    for spec in METRICS:
        rk = summary.rankings.get(spec.key)
        if rk is None or rk.comparisons is None:
            continue
        c = rk.comparisons
        for (a, b), d in c.pairs.items():
            u = c.uncorrected[(a, b)]
            k = spec.scale
            writer.writerow([spec.key, a, b, d.n, _g(d.mean * k), _g(d.low * k), _g(d.high * k),
                             _g(d.p), d.significant, _g(u.low * k), _g(u.high * k), _g(u.p),
                             u.significant, c.correction])  # fmt: skip
    return buffer.getvalue()


def _g(x: float | None) -> str:
    return "" if x is None or x != x or x in (float("inf"), float("-inf")) else f"{x:.6g}"


def _settings(run: dict) -> dict:
    settings = run.get("settings")
    return settings if isinstance(settings, dict) else run


def _facts(runs: list[dict], dirs: Sequence[Path], s: Scalars) -> list[tuple[str, str]]:
    first = _settings(runs[0]) if runs else {}
    facts = [("run folders", ", ".join(str(d) for d in dirs))]
    for key in ("model", "weights", "weights_source", "layer", "precision"):
        if first.get(key) not in (None, ""):
            facts.append((key.replace("_", " "), str(first[key])))
    facts.append(("methods", ", ".join(label(m) for m in s.methods)))
    facts.append(("images", f"{s.n:,} explained, {s.failures.num_rows:,} failed"))
    if first.get("task"):  # camscope run --task detect|segment|prompt: one unit per object
        facts[-1] = ("objects", f"{s.n:,} explained (n counts objects of images), "
                     f"{s.failures.num_rows:,} image(s) failed; task {first['task']}")  # fmt: skip
    truth = s.images.column("truth_index").to_pylist()
    top1 = s.images.column("top1_index").to_pylist()
    known = [(t, p) for t, p in zip(truth, top1, strict=True) if t is not None]
    if known:
        k = sum(t == p for t, p in known)
        facts.append(("top-1 accuracy", f"{k}/{len(known)} = {num(100 * k / len(known), 1)}%"))
    return facts


def _notes(runs: list[dict], dirs: Sequence[Path]) -> list[str]:
    notes = []
    hashes = {str(r.get("settings_hash")) for r in runs if r.get("settings_hash")}
    if len(hashes) > 1:
        notes.append(f"The run folders were made with {len(hashes)} different settings; their "
                     "rows are merged as they are.")  # fmt: skip
    for d, r in zip(dirs, runs, strict=True):
        if r.get("state") not in (None, "complete"):
            notes.append(f"{d}: run state is {r.get('state')!r}; its finished images are shown.")
        notes += [f"{d}: {n}" for n in r.get("notes", []) if isinstance(n, str)]
    return notes


def _boxes_note(runs: list[dict], summary: Summary, n: int) -> list[str]:
    """A run given --boxes where no image had any: said, as the summary has no table to say it."""
    given = any(_settings(r).get("boxes") for r in runs)
    if given and not summary.of_kind("localisation"):
        return [f"Localisation: --boxes was given but none of the {n:,} images had boxes, so no "
                "localisation metric was measured."]  # fmt: skip
    return []


def _links(out_dir: Path, dirs: Sequence[Path]) -> list[tuple[str, str]]:
    """Relative links to each folder's metrics.csv (when written) and results table."""
    links = []
    for d in dirs:
        for name in (runfolder.METRICS_CSV, runfolder.RESULTS):
            target = d / name
            if not target.exists():
                continue
            rel = Path(os.path.relpath(target, out_dir)).as_posix()
            links.append((f"{d.name}/{name}" if len(dirs) > 1 else name, rel))
    return links


def _write(out: dict[str, Path], path: Path, data: str | bytes) -> None:
    """Write one output atomically; a failure is one warning line and the others go on."""
    try:
        if isinstance(data, bytes):
            atomic_write_bytes(path, data)
        else:
            write_text(path, data)
    except OSError as exc:
        log.warning("%s: cannot write (%s)", path, exc.strerror or exc)
        return
    out[path.name] = path


def build_report(
    run_dirs: Sequence[Path | str],
    out_dir: Path | str,
    *,
    title: str | None = None,
    gallery_cap: int = GALLERY_CAP,
    resamples: int = RESAMPLES,
    seed: int = 0,
    thresholds: Thresholds | None = None,
) -> dict[str, Path]:
    """Build summary.csv, comparisons.csv, the plots, report.html and report.md in ``out_dir``.

    ``run_dirs``: one run folder, or several (shards) merged into one report. Returns the files
    written (name -> path); a file that cannot be written is one warning line and left out.
    Raises `RunFolderError` (one line naming the file) when a folder has no readable table.

    Example:
        >>> build_report([Path("out")], Path("out"))  # doctest: +SKIP
        {'summary.csv': ..., 'report.html': ..., 'report.md': ...}
    """
    thresholds = thresholds or Thresholds()
    dirs = [Path(d) for d in run_dirs]
    out_dir = Path(out_dir)
    runs = []
    for d in dirs:
        try:
            runs.append(read_run(d))
        except RunFolderError as exc:
            log.warning("%s", exc)
            runs.append({})
    preferred = [m for r in runs for m in _settings(r).get("methods", []) or []]
    if not preferred:  # no readable run.json: the methods the table holds
        found = RunTable(dirs, []).read(["method"]).column("method").to_pylist()
        preferred = [m for m in dict.fromkeys(found) if m]
    table = RunTable(dirs, preferred)
    s = load_scalars(table, preferred)
    derive_settings(table, s, curve_facts([_settings(r) for r in runs]))
    summary = summarise(s, read_sanity(dirs), thresholds=thresholds, resamples=resamples)
    steps = next((_settings(r).get("steps") for r in runs if _settings(r).get("steps")), None)
    ctx = ReportContext(
        title=title or f"camscope report: {', '.join(d.name for d in dirs)}",
        facts=_facts(runs, dirs, s),
        links=_links(out_dir, dirs),
        scalars=s,
        summary=summary,
        steps=steps,
        thresholds=thresholds,
        figures=_figures(table, s, summary),
        notes=_notes(runs, dirs) + _boxes_note(runs, summary, s.n),
    )
    ctx.sections = select_sections(s, gallery_cap, seed)
    ctx.cards = make_cards(table, s, ctx.sections)
    doc = build_document(ctx)
    out: dict[str, Path] = {}
    out_dir.mkdir(parents=True, exist_ok=True)
    _write(out, out_dir / runfolder.SUMMARY_CSV, summary_csv(s, summary))
    if summary.rankings:
        _write(out, out_dir / runfolder.COMPARISONS_CSV, comparisons_csv(summary))
    for figure in doc.figures():
        _write(out, out_dir / figure.file, figure.png)
    _write(out, out_dir / runfolder.REPORT_HTML, render_html(doc))
    _write(out, out_dir / runfolder.REPORT_MD, render_markdown(doc))
    return out


def _figures(table: RunTable, s: Scalars, summary: Summary) -> list[Figure]:
    """The plots: metric distributions (any methods), mean curves (with metrics)."""
    figures = []
    if s.methods and summary.measured:
        png = figure_png(plot_distributions(s, summary))
        figures.append(Figure("distributions", runfolder.DISTRIBUTIONS_PNG,
                              "Metric distributions per method", png))  # fmt: skip
    if s.has_metrics:
        sums = curve_sums(table, s.methods)
        road = any(k.startswith("road") for v in sums.values() for k in v)
        caption = f"Mean deletion{', insertion and ROAD' if road else ' and insertion'} curves"
        png = figure_png(plot_curves(sums))
        figures.append(Figure("curves", runfolder.CURVES_PNG, caption, png))
    return figures
