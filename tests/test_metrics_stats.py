"""Statistics that cannot overreach: bootstrap and Wilson intervals against brute force."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from camscope import metrics as M

Z95 = 1.959963984540054  # the 0.975 standard-normal quantile, written out


def _exact_bootstrap_means(x: np.ndarray) -> np.ndarray:
    """Every one of the n**n equally likely resamples of x, as means (tiny n only)."""
    n = len(x)
    idx = np.array(list(itertools.product(range(n), repeat=n)))
    return x[idx].mean(axis=1)


def _cdf_brackets(exact: np.ndarray, value: float) -> tuple[float, float]:
    """(P(mean < value), P(mean <= value)) under the exact bootstrap distribution."""
    return float((exact < value - 1e-12).mean()), float((exact <= value + 1e-12).mean())


@pytest.mark.parametrize(
    ("x", "path"),
    [
        (np.array([0.05, 0.2, 0.31, 0.5, 0.93, 0.97]), "indices"),
        (np.array([0.05, 0.2, 0.31, 0.5, 0.93, 0.97]), "counts"),
        (np.array([0.0, 1.0, 1.0, 0.0, 1.0, 1.0]), "counts"),  # 0/1 outcomes
        (np.array([-1.0, 0.0, 1.0, 1.0, 0.0, 1.0]), "indices"),  # paired 0/1 differences
    ],
)
def test_bootstrap_percentiles_match_exhaustive_resampling(x, path, monkeypatch):
    from camscope.metrics import stats

    # both ways of drawing resamples: image indices, or counts per distinct value
    monkeypatch.setattr(stats, "_FEW_VALUES", 0 if path == "indices" else 32)
    exact = _exact_bootstrap_means(x)  # 6**6 = 46,656 resamples
    iv = M.bootstrap_interval(x, resamples=20_000, min_n=1)
    # each endpoint sits where the exact bootstrap CDF crosses 2.5% / 97.5% (MC error ~0.1%)
    below, upto = _cdf_brackets(exact, iv.low)
    assert below <= 0.025 + 0.006 and upto >= 0.025 - 0.006
    below, upto = _cdf_brackets(exact, iv.high)
    assert below <= 0.975 + 0.006 and upto >= 0.975 - 0.006
    assert iv.mean == pytest.approx(x.mean()) and iv.method == "bootstrap percentile"


def test_bootstrap_means_have_the_bootstrap_variance():
    rng = np.random.default_rng(3)
    x = rng.beta(2, 5, size=500)
    means = M.bootstrap_means(x, resamples=20_000, seed=1)
    # exact bootstrap moments: E = mean(x), Var = population variance / n
    assert means.mean() == pytest.approx(x.mean(), abs=4e-4)
    assert means.var() == pytest.approx(x.var() / len(x), rel=0.05)
    assert np.array_equal(means, M.bootstrap_means(x, resamples=20_000, seed=1))  # seeded


def _wilson_by_roots(k: int, n: int) -> tuple[float, float]:
    """Wilson's interval as the roots in p of (p_hat - p)^2 = z^2 p (1 - p) / n, float64."""
    p_hat, z2 = k / n, Z95 * Z95
    a, b, c = 1 + z2 / n, -(2 * p_hat + z2 / n), p_hat * p_hat
    disc = math.sqrt(b * b - 4 * a * c)
    return ((-b - disc) / (2 * a), (-b + disc) / (2 * a))


@pytest.mark.parametrize(("k", "n"), [(0, 3), (2, 3), (3, 3), (1, 10), (7, 12), (5000, 5000)])
def test_wilson_matches_textbook_formula(k, n):
    low, high = M.wilson_interval(k, n)
    ref_low, ref_high = _wilson_by_roots(k, n)
    assert low == pytest.approx(max(ref_low, 0.0), abs=1e-12)
    assert high == pytest.approx(min(ref_high, 1.0), abs=1e-12)
    assert 0.0 <= low <= k / n <= high <= 1.0


def test_intervals_never_leave_the_range():
    rng = np.random.default_rng(0)
    cases = [
        ([0.0, 0.0, 1.0], (0.0, 1.0)),
        ([1.0] * 12, (0.0, 1.0)),
        ([0.0, 1.0], (0.0, 1.0)),
        (rng.choice([0.0, 1.0], size=7, p=[0.05, 0.95]), (0.0, 1.0)),
        ([0.999, 1.0, 0.998, 1.0], (0.0, 1.0)),  # AUCs near the top
        ([-1.0, 1.0, 1.0, 0.99], (-1.0, 1.0)),  # Pearson r
        (rng.uniform(0.97, 1.0, size=15), (-1.0, 1.0)),
    ]
    for values, (lo, hi) in cases:
        iv = M.bootstrap_interval(values, bounds=(lo, hi))
        assert lo <= iv.low <= iv.mean <= iv.high <= hi, (values, iv)
        assert min(values) <= iv.low and iv.high <= max(values)
    for k in range(0, 4):
        p = M.proportion_interval([1.0] * k + [0.0] * (3 - k))
        assert 0.0 <= p.low <= p.mean <= p.high <= 1.0 and p.method == "Wilson score"
    # the case: Student t gave Increase [-76.8 %, 210 %] on 3 images
    p = M.proportion_interval([1.0, 1.0, 0.0])
    assert 0.0 < p.low < p.high < 1.0 and not p.meaningful


def test_small_n_is_flagged_and_never_significant():
    a = np.linspace(0.6, 0.9, 9)
    d = M.paired_difference(a, a - 0.3)
    assert d.n == 9 and d.low > 0 and not d.significant  # clear shift, but n < MIN_N
    assert not M.bootstrap_interval(a).meaningful
    assert M.bootstrap_interval(np.r_[a, 0.7]).meaningful
    one = M.bootstrap_interval([0.3])
    assert one.mean == 0.3 and math.isnan(one.low) and one.method == "none"
    assert math.isnan(M.bootstrap_interval([]).mean)


def test_paired_difference_by_bootstrap():
    rng = np.random.default_rng(1)
    a = rng.uniform(0.3, 0.7, size=40)
    shifted = M.paired_difference(a, a - 0.1 + rng.normal(0, 0.01, size=40))
    assert shifted.significant and shifted.low > 0.09 and shifted.high < 0.11
    noisy = M.paired_difference(a, rng.permutation(a))
    assert not noisy.significant and noisy.low < 0 < noisy.high
    with_nan = M.paired_difference([0.1, np.nan, 0.3], [0.0, 0.2, np.nan])
    assert with_nan.n == 1 and not with_nan.significant
    with pytest.raises(ValueError, match="length"):
        M.paired_difference([1.0], [1.0, 2.0])


def test_three_way_tie_is_a_tie():
    # the case: three methods, all 66.7 % Increase
    same = np.array([1.0, 1.0, 0.0] * 4)
    r = M.rank_methods(
        {"gradcam": same, "scorecam": np.roll(same, 1), "ablationcam": np.roll(same, 2)},
        higher_is_better=True,
        tolerance=5e-4,
    )
    assert r.tied_best == ["gradcam", "scorecam", "ablationcam"] and r.best is None


def test_rank_names_a_best_only_when_significant():
    rng = np.random.default_rng(2)
    base = rng.uniform(0.2, 0.6, size=30)
    clear = M.rank_methods(
        {"a": base, "b": base + 0.2, "c": base + 0.1}, higher_is_better=True, tolerance=5e-4
    )
    assert clear.order == ["b", "c", "a"] and clear.best == "b" and clear.meaningful
    lower = M.rank_methods({"a": base, "b": base + 0.2}, higher_is_better=False, tolerance=5e-4)
    assert lower.order == ["a", "b"] and lower.best == "a"
    close = M.rank_methods(
        {"a": base, "b": base + rng.normal(0.001, 0.05, size=30)},
        higher_is_better=True,
        tolerance=5e-4,
    )
    assert close.best is None and len(close.tied_best) == 1
    small = M.rank_methods({"a": base[:5], "b": base[:5] + 0.2}, higher_is_better=True, tolerance=0)
    assert small.best is None and not small.meaningful


# ---------------------------------------------------------------------------- sanity: empty maps


def test_empty_randomised_maps_are_counted_not_passed():
    inputs, targets = torch.rand(3, 3, 8, 8), torch.zeros(3, dtype=torch.long)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 2))
    calls = []

    def vanishing(model, x, t):  # the trained map is real; every randomised map is all zero
        calls.append(1)
        return torch.rand(len(x), 8, 8) if len(calls) == 1 else torch.zeros(len(x), 8, 8)

    steps = M.sanity_check(model, vanishing, inputs, targets, blocks=["1"])
    final = steps[-1]
    assert final.n_empty == 3 and final.empty.tolist() == [True] * 3
    assert math.isnan(final.mean_abs)  # no correlation is claimed from empty maps
    assert not M.passes_sanity(steps)
    verdict = M.sanity_verdict(final.spearman, final.empty)
    assert verdict.outcome == "empty" and verdict.describe() == "fail: 3 of 3 randomised maps empty"


def test_sanity_verdict_rule():
    assert M.sanity_verdict([0.1, -0.2], [False, False]).describe() == "pass"
    assert M.sanity_verdict([0.9, 0.8], [False, False]).outcome == "fail"
    partly = M.sanity_verdict([0.1, 0.0, 0.0], [False, True, False])
    assert not partly.passed and partly.n_empty == 1 and partly.mean_abs == pytest.approx(0.05)
    assert M.sanity_verdict([math.nan], [False]).outcome == "fail"
    assert M.empty_maps(torch.full((1, 4, 4), 0.3)).tolist() == [True]


def test_sanity_verdict_is_undecided_when_its_interval_holds_the_threshold():
    """Mean |rho| 0.55 over 4 images: the bootstrap interval holds 0.5, so no verdict."""
    rho = [0.2, -0.9, 0.3, 0.8]
    v = M.sanity_verdict(rho, [False] * 4)
    assert v.outcome == "undecided" and not v.passed and v.describe() == "undecided (4 images)"
    # the interval is the percentile bootstrap of the mean |rho| (tested against a reference above)
    iv = M.bootstrap_interval(np.abs(rho), bounds=(0.0, 1.0))
    assert (v.low, v.high) == (iv.low, iv.high) and v.low < 0.5 <= v.high
    assert v.mean_abs == pytest.approx(0.55)
    # the same values, tight: 40 images of them decide (the interval leaves 0.5)
    many = M.sanity_verdict([0.2, 0.3, 0.25, 0.35] * 10, [False] * 40)
    assert many.outcome == "pass" and many.high < 0.5
    stuck = M.sanity_verdict([0.9, 0.8, 0.7, 0.95] * 10, [False] * 40)
    assert stuck.outcome == "fail" and stuck.low >= 0.5
    # one image has no interval: its value decides, as before
    assert M.sanity_verdict([0.45], [False]).outcome == "pass"


# ------------------------------------------------------------------ multiple comparisons (17.7)


def _null_family(seed: int, k: int = 9, n: int = 40) -> dict[str, np.ndarray]:
    """k methods: the first is 0.15 better; the other k-1 have the same true mean.

    Each image has its own difficulty shared by every method (as in real runs), plus noise.
    """
    rng = np.random.default_rng(seed)
    image = rng.uniform(0.2, 0.6, size=n)
    out = {f"m{i}": image + rng.normal(0, 0.08, size=n) for i in range(k)}
    out["m0"] = out["m0"] + 0.15
    return out


def test_correction_removes_a_chance_difference_and_keeps_a_real_one():
    samples = _null_family(seed=10)  # 6 of 28 null pairs "significant" uncorrected
    c = M.compare_methods(samples, resamples=4000)
    null = [p for p in c.pairs if "m0" not in p]  # 28 pairs whose true difference is 0
    # uncorrected, some of the 28 null pairs come out "significant" by chance ...
    chance = [p for p in null if c.uncorrected[p].significant]
    assert chance, "this seed must show a chance difference without correction"
    # ... corrected, none does, while the real lead of m0 stays significant against all 8
    assert not any(c.pairs[p].significant for p in null)
    assert all(c.pairs[("m0", f"m{i}")].significant for i in range(1, 9))
    assert all(c.pairs[p].low <= c.uncorrected[p].low for p in c.pairs)  # wider, never narrower
    assert all(c.pairs[p].p >= c.uncorrected[p].p - 1e-12 for p in chance)
    # the ranking names m0 best only from the corrected comparisons
    r = M.rank_methods(samples, higher_is_better=True, tolerance=5e-4, resamples=4000)
    assert r.best == "m0" and r.comparisons is not None and r.pairs == r.comparisons.pairs


def test_simultaneous_intervals_cover_together_by_simulation():
    """Family-wise coverage over 200 seeded data sets: ~95% corrected, far less uncorrected."""
    truth = np.array([0.0, 0.05, 0.05, 0.1, 0.0])  # 5 methods, 10 pairs, known differences
    covered = {"corrected": 0, "uncorrected": 0}
    runs = 200
    for seed in range(runs):
        rng = np.random.default_rng(1000 + seed)
        image = rng.uniform(0.2, 0.6, size=30)
        samples = {f"m{i}": image + t + rng.normal(0, 0.1, size=30) for i, t in enumerate(truth)}
        c = M.compare_methods(samples, resamples=1000, seed=seed)
        for kind, pairs in (("corrected", c.pairs), ("uncorrected", c.uncorrected)):
            true = {(a, b): truth[int(a[1])] - truth[int(b[1])] for a, b in pairs}
            covered[kind] += all(d.low <= true[p] <= d.high for p, d in pairs.items())
    assert covered["corrected"] / runs >= 0.91  # nominal 0.95; binomial sd 0.015
    assert covered["uncorrected"] / runs <= 0.85  # ten 95% intervals do not cover together


def test_simultaneous_critical_value_matches_exhaustive_bootstrap():
    """c against the exact bootstrap-t: every one of the 6**6 resamples, float64, brute force."""
    rng = np.random.default_rng(5)
    x = {m: rng.uniform(0, 1, size=6) for m in "abc"}
    pairs = list(itertools.combinations("abc", 2))
    diffs = np.stack([x[a] - x[b] for a, b in pairs], axis=1)  # (6, 3)
    idx = np.array(list(itertools.product(range(6), repeat=6)))  # 46,656 resamples
    drawn = diffs[idx]  # (46656, 6, 3)
    boot, boot_se = drawn.mean(axis=1), drawn.std(axis=1, ddof=1) / math.sqrt(6)
    d, se = diffs.mean(axis=0), diffs.std(axis=0, ddof=1) / math.sqrt(6)
    boot_se = np.maximum(boot_se, 0.5 * se)  # the documented floor (SE_FLOOR)
    t_max = (np.abs(boot - d) / boot_se).max(axis=1)
    exact = np.quantile(t_max, 0.95, method="higher")
    c = M.compare_methods(x, resamples=40_000, min_n=1)
    assert c.critical == pytest.approx(exact, rel=0.04)
    for p, (a, b) in enumerate(pairs):
        got = c.pairs[(a, b)]
        assert got.mean == pytest.approx(d[p])
        assert (got.low, got.high) == pytest.approx(
            (d[p] - exact * se[p], d[p] + exact * se[p]), abs=0.04 * exact * se[p] + 1e-9
        )
        assert c.difference(b, a).mean == pytest.approx(-d[p])


def test_a_sparse_pair_does_not_widen_the_others():
    """A pair of mostly-zero metrics (resamples with ~equal differences) keeps c bounded.

    Without the floor on the resampled standard error, a resample that draws only zeros gives
    an unbounded t for that pair and, through the maximum, every interval of the metric widens.
    """
    rng = np.random.default_rng(4)
    zeros = np.zeros(12)
    sparse = np.where(np.arange(12) < 3, rng.uniform(0.005, 0.05, 12), 0.0)  # 3 of 12 non-zero
    clear = {"a": zeros, "b": sparse, "c": rng.uniform(0.02, 0.12, 12),
             "d": rng.uniform(0.03, 0.12, 12)}  # fmt: skip
    c = M.compare_methods(clear)
    assert c.critical < 4.0  # Bonferroni-t for 6 pairs at n = 12: 3.2
    assert c.pairs[("a", "c")].significant and c.pairs[("a", "d")].significant
    assert M.SE_FLOOR == 0.5


def test_comparisons_edge_cases():
    same = np.linspace(0.1, 0.9, 12)
    c = M.compare_methods({"a": same, "b": same + 0.1, "c": same})
    assert c.pairs[("a", "b")] == pytest.approx((-0.1, -0.1, -0.1, True, 12, 0.0))
    assert not c.pairs[("a", "c")].significant and c.pairs[("a", "c")].mean == 0
    few = M.compare_methods({"a": same[:5], "b": same[:5] + 0.3})
    assert not few.pairs[("a", "b")].significant  # n < MIN_N
    gaps = M.compare_methods({"a": [0.1, np.nan, 0.3], "b": [0.0, 0.2, np.nan]})
    assert gaps.pairs[("a", "b")].n == 1 and math.isnan(gaps.pairs[("a", "b")].low)
    assert M.compare_methods({"a": same}).pairs == {}
    with pytest.raises(ValueError, match="length"):
        M.compare_methods({"a": [1.0], "b": [1.0, 2.0]})


# ------------------------------------------------------------------ ranking robustness (17.6)


def _tau_b_by_hand(x, y) -> float:
    """Kendall's tau-b from its definition: (C - D) / sqrt((P - Tx)(P - Ty)), float64 loops."""
    conc = disc = tx = ty = pairs = 0
    for i, j in itertools.combinations(range(len(x)), 2):
        pairs += 1
        sx, sy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
        tx += sx == 0
        ty += sy == 0
        conc += sx * sy > 0
        disc += sx * sy < 0
    return (conc - disc) / math.sqrt((pairs - tx) * (pairs - ty))


def test_kendall_tau_b_matches_its_definition():
    rng = np.random.default_rng(7)
    for _ in range(20):
        x, y = rng.integers(0, 4, size=6).astype(float), rng.normal(size=6)
        y[1] = y[0]  # ties on both sides
        if len(set(x)) == 1:
            continue
        assert M.kendall_tau_b(x, y) == pytest.approx(_tau_b_by_hand(x, y), abs=1e-12)
    assert math.isnan(M.kendall_tau_b(np.ones(4), np.arange(4.0)))
    assert M.kendall_tau_b(np.array([0.1, 0.2]), np.array([0.0, 1.0]), tolerance_x=0.5) != 1


def test_ranking_agreement_between_metrics():
    rng = np.random.default_rng(8)
    n, image = 60, rng.uniform(0, 1, size=60)
    level = {"a": 0.0, "b": 0.1, "c": 0.2, "d": 0.3}
    up = {m: image + v + rng.normal(0, 0.05, n) for m, v in level.items()}  # d best
    down = {m: image - v + rng.normal(0, 0.05, n) for m, v in level.items()}  # a best
    lower = {m: image + v + rng.normal(0, 0.05, n) for m, v in level.items()}  # lower is better
    got = M.ranking_agreement(
        {"up": up, "down": down, "lower": lower},
        {"up": True, "down": True, "lower": False},
        resamples=2000,
    )
    agree, flip = got[("up", "down")], got[("up", "lower")]
    assert agree.mean == pytest.approx(-1.0) and agree.high < 0 and agree.meaningful
    assert flip.mean == pytest.approx(-1.0) and got[("down", "lower")].mean == pytest.approx(1.0)
    # the point estimate is tau-b of the mean orders, by hand
    noisy = {m: image + rng.normal(0, 0.3, n) for m in level}
    got = M.ranking_agreement({"up": up, "noisy": noisy}, {"up": True, "noisy": True},
                              resamples=2000)  # fmt: skip
    tau = got[("up", "noisy")]
    means = [[np.mean(s[m]) for m in level] for s in (up, noisy)]
    assert tau.mean == pytest.approx(_tau_b_by_hand(*means))
    assert tau.low <= tau.mean <= tau.high and tau.high - tau.low > 0.5  # noisy: wide


def test_corrected_intervals_stay_inside_the_range_of_a_difference():
    rng = np.random.default_rng(6)
    yes = {
        m: rng.binomial(1, p, 12).astype(float) for m, p in (("a", 0.95), ("b", 0.1), ("c", 0.5))
    }
    c = M.compare_methods(yes, bounds=(0.0, 1.0))
    free = M.compare_methods(yes)
    assert any(d.low < -1 or d.high > 1 for d in free.pairs.values())  # unclipped: outside
    for key, d in c.pairs.items():
        assert -1.0 <= d.low <= d.mean <= d.high <= 1.0
        assert d.significant == free.pairs[key].significant  # clipping never changes a verdict


def test_ranking_agreement_takes_each_pair_of_metrics_over_the_images_both_have():
    """A metric measured on some images only (localisation: where there are boxes) is compared
    with another over those images, per method; pairs measured everywhere are unchanged."""
    rng = np.random.default_rng(9)
    n, level = 50, {"a": 0.0, "b": 0.1, "c": 0.2, "d": 0.3}
    boxed = np.arange(n) % 3 != 0
    image = rng.uniform(0, 1, n)
    full = {
        m: np.where(boxed, image + v, 2.0 - 3 * v) + rng.normal(0, 0.05, n)
        for m, v in level.items()
    }  # order d > c > b > a on boxed images, reversed elsewhere
    part = {
        m: np.where(boxed, image + v + rng.normal(0, 0.05, n), np.nan) for m, v in level.items()
    }
    other = {m: image + v + rng.normal(0, 0.05, n) for m, v in level.items()}
    samples = {"full": full, "part": part, "other": other}
    better = {"full": True, "part": True, "other": True}
    got = M.ranking_agreement(samples, better, resamples=1000)
    tau = got[("full", "part")]
    # by hand: each method's means over the images where it has both values
    means = [[np.mean(s[m][boxed]) for m in level] for s in (full, part)]
    assert tau.mean == pytest.approx(_tau_b_by_hand(*means)) == pytest.approx(1.0)
    assert tau.n == boxed.sum()
    everywhere = [np.mean(full[m]) for m in level]
    assert _tau_b_by_hand(everywhere, means[1]) == pytest.approx(-1.0)  # mixing image sets
    # the same resamples as a call on the pair restricted by hand; other pairs as alone
    restricted = {m: np.where(boxed, full[m], np.nan) for m in level}
    alone = M.ranking_agreement({"full": restricted, "part": part}, better, resamples=1000)
    assert tau == alone[("full", "part")]
    pair = M.ranking_agreement({"full": full, "other": other}, better, resamples=1000)
    assert got[("full", "other")] == pair[("full", "other")]


def test_wilson_interval_contains_the_proportion_exactly_at_the_edges():
    # 0/10, 13/13, ...: centre -/+ half lands a rounding error past p (a plot's yerr < 0)
    for n in range(1, 120):
        for k in range(n + 1):
            low, high = M.wilson_interval(k, n)
            assert 0.0 <= low <= k / n <= high <= 1.0
        assert M.wilson_interval(0, n)[0] == 0.0 and M.wilson_interval(n, n)[1] == 1.0
