"""bil_jax.stats against reference definitions: bootstrap intervals and paired Wilcoxon tests."""
import numpy as np
import pytest
import scipy.stats

from bil_jax import stats


def test_bootstrap_interval_contains_the_mean_and_shrinks_with_n():
  rng = np.random.default_rng(1)
  widths = []
  for n in (10, 100, 1000):
    v = rng.normal(0.4, 0.1, n)
    lo, hi = stats.bootstrap_mean_ci(v)
    assert lo < v.mean() < hi
    widths.append(hi - lo)
  assert widths[0] > widths[1] > widths[2]
  # The percentile interval of the mean of N(0.4, 0.1) samples is about 2 * 1.96 * 0.1/sqrt(n).
  assert widths[2] == pytest.approx(2 * 1.96 * 0.1 / np.sqrt(1000), rel=0.15)


def test_bootstrap_is_a_fixed_function_of_its_seed_and_equals_the_direct_percentiles():
  v = np.array([0.1, 0.5, 0.2, 0.9, 0.4, 0.3])
  assert stats.bootstrap_mean_ci(v) == stats.bootstrap_mean_ci(v)
  rng = np.random.default_rng(7)
  means = v[rng.integers(0, 6, (2000, 6))].mean(axis=1)
  direct = tuple(np.percentile(means, [5.0, 95.0]))
  assert stats.bootstrap_mean_ci(v, confidence=0.9, num_resamples=2000, seed=7,
                                 chunk=2000) == pytest.approx(direct)
  assert stats.bootstrap_mean_ci([3.0]) == (3.0, 3.0)
  assert all(np.isnan(stats.bootstrap_mean_ci([])))


def test_wilcoxon_p_equals_scipy_and_all_zero_differences_give_one():
  d = np.array([0.8, -0.2, 1.5, 0.3, 0.0, 2.1, 0.7, -0.4, 1.1])
  assert stats.wilcoxon_p(d) == pytest.approx(scipy.stats.wilcoxon(d).pvalue)
  assert stats.wilcoxon_p(np.zeros(5)) == 1.0
  assert stats.wilcoxon_p([]) == 1.0
  assert np.isnan(stats.wilcoxon_p([1.0, np.nan]))
  # All 6 differences positive: exact two-sided p = 2 / 2^6.
  assert stats.wilcoxon_p([1, 2, 3, 4, 5, 6]) == pytest.approx(2 / 64)


def test_known_positive_paired_difference_excludes_zero():
  rng = np.random.default_rng(3)
  b = rng.uniform(0.3, 0.5, 20)
  a = b + 0.02 + rng.normal(0, 0.005, 20)
  d = stats.paired_difference(a, b)
  assert d["ci_low"] > 0 and d["mean"] == pytest.approx(np.mean(a - b))
  assert d["p_wilcoxon"] < 1e-4 and d["a_better"] == 20 and d["n"] == 20
  assert d["relative_pct"] == pytest.approx(100 * np.mean(a - b) / np.mean(b))
  # Lower is better (MSE): a larger a is worse on every task.
  assert stats.paired_difference(a, b, lower_is_better=True)["a_better"] == 0
  assert stats.paired_difference(a, b, relative=False)["relative_pct"] is None
  same = stats.paired_difference(b, b)
  assert same["mean"] == 0 and same["p_wilcoxon"] == 1.0 and same["ci_low"] == same["ci_high"] == 0
  with pytest.raises(ValueError, match="same length"):
    stats.paired_difference(a, b[:3])


def test_relative_change_and_summary():
  assert stats.relative_change(0.01, 0.5) == pytest.approx(2.0)
  assert stats.relative_change(0.01, -0.5) == pytest.approx(2.0)
  assert stats.relative_change(1.0, 0.0) is None
  s = stats.summarize([1.0, 2.0, 3.0])
  assert s["mean"] == 2.0 and s["n"] == 3 and 1.0 <= s["ci_low"] < 2.0 < s["ci_high"] <= 3.0
