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
