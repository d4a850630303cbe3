"""bil_jax.stats against reference definitions and simulated designs: the one- and two-level
bootstraps, the seed-level t-interval, bootstrap p-values and Holm's adjustment."""
import numpy as np
import pytest
import scipy.stats

from bil_jax import stats


def seeds_and_tasks(rng, seed_sd: float, task_sd: float = 0.05, seeds: int = 5, tasks: int = 20):
  """Groups [seeds][tasks] of mean 0: a shared offset per seed plus task noise."""
  return [o + rng.normal(0, task_sd, tasks) for o in rng.normal(0, seed_sd, seeds)]


def width(interval):
  return interval[1] - interval[0]


def test_task_bootstrap_interval_contains_the_mean_and_shrinks_with_n():
  rng = np.random.default_rng(1)
  widths = []
  for n in (10, 100, 1000):
    v = rng.normal(0.4, 0.1, n)
    lo, hi = stats.bootstrap_mean_ci(v, num_resamples=2000)
    assert lo < v.mean() < hi
    widths.append(hi - lo)
  assert widths[0] > widths[1] > widths[2]
  # The percentile interval of the mean of N(0.4, 0.1) samples is about 2 * 1.96 * 0.1/sqrt(n).
  assert widths[2] == pytest.approx(2 * 1.96 * 0.1 / np.sqrt(1000), rel=0.15)


def test_task_bootstrap_is_a_fixed_function_of_its_seed_and_equals_the_direct_percentiles():
  v = np.array([0.1, 0.5, 0.2, 0.9, 0.4, 0.3])
  assert stats.bootstrap_mean_ci(v) == stats.bootstrap_mean_ci(v)
  rng = np.random.default_rng(7)
  means = v[rng.integers(0, 6, (1000, 6))].mean(axis=1)
  direct = tuple(np.percentile(means, [5.0, 95.0]))
  assert stats.bootstrap_mean_ci(v, confidence=0.9, num_resamples=1000,
                                 seed=7) == pytest.approx(direct)
  assert stats.bootstrap_mean_ci([3.0]) == (3.0, 3.0)
  assert all(np.isnan(stats.bootstrap_mean_ci([])))


def test_with_one_seed_the_two_level_bootstrap_is_the_task_bootstrap():
  v = np.random.default_rng(2).normal(0.5, 0.1, 15)
  np.testing.assert_array_equal(stats.two_level_bootstrap([v], 500, seed=3),
                                stats.task_bootstrap(v, 500, seed=3))
  s = stats.summarize([v], num_resamples=500)
  assert (s["ci_low"], s["ci_high"]) == stats.bootstrap_mean_ci(v, num_resamples=500)
  assert np.isnan(s["seed_ci_low"]) and s["seeds"] == 1 and s["n"] == 15


def test_two_level_interval_widens_with_between_seed_variance_pooled_does_not():
  rng = np.random.default_rng(0)
  noise = seeds_and_tasks(rng, 0.0)
  offsets = np.array([-0.1, -0.05, 0.0, 0.05, 0.1])  # between-seed sd 0.079
  shifted = [g + o for g, o in zip(noise, offsets)]
  two = [
      width(stats.percentile_interval(stats.two_level_bootstrap(g, 2000))) for g in (noise, shifted)
  ]
  pooled = [
      width(stats.bootstrap_mean_ci(np.concatenate(g), num_resamples=2000))
      for g in (noise, shifted)
  ]
  # Two-level: about 2 * 1.96 * sqrt(var(offsets, ddof=0) / 5 + 0.05^2 / 100) = 0.13,
  # against 0.0196 without seed offsets. Pooled: the task spread only (0.0196 -> 0.035).
  assert two[1] > 5 * two[0] and two[1] == pytest.approx(
      2 * 1.96 * np.sqrt(offsets.var() / 5 + 0.05 ** 2 / 100), rel=0.2)
  assert pooled[1] < 2 * pooled[0] and pooled[1] < two[1] / 3


def test_two_level_interval_covers_the_true_mean_where_the_pooled_one_does_not():
  """Simulated replications with real between-seed variance (sd 0.05 of seeds, 0.05 of
  tasks, 5 seeds x 20 tasks): the pooled task bootstrap treats 100 pairs as independent."""
  rng = np.random.default_rng(4)
  hits_two = hits_pooled = 0
  sims = 100
  for i in range(sims):
    g = seeds_and_tasks(rng, 0.05)
    lo, hi = stats.percentile_interval(stats.two_level_bootstrap(g, 400, seed=i))
    hits_two += lo <= 0 <= hi
    lo, hi = stats.bootstrap_mean_ci(np.concatenate(g), num_resamples=400, seed=i)
    hits_pooled += lo <= 0 <= hi
  assert hits_two >= 0.75 * sims and hits_pooled <= 0.6 * sims


def test_two_level_handles_seeds_with_different_task_counts():
  gs = [np.full(3, 1.0), np.full(7, 3.0)]
  dist = stats.two_level_bootstrap(gs, 1000)
  # The statistic is the mean of seed means: only the seed draw varies here.
  assert set(np.round(dist, 9)) == {1.0, 2.0, 3.0}
  assert stats.summarize(gs, num_resamples=1000)["mean"] == 2.0
  with pytest.raises(ValueError, match="one task per seed"):
    stats.two_level_bootstrap([[1.0], []])


def test_seed_t_interval_equals_scipy():
  v = [0.116, 0.085, 0.057, 0.09, 0.1]
  want = scipy.stats.t.interval(0.95, 4, loc=np.mean(v), scale=scipy.stats.sem(v))
  assert stats.seed_t_interval(v) == pytest.approx(want)
  assert all(np.isnan(stats.seed_t_interval([0.1])))


def test_holm_matches_the_textbook_procedure():
  # Sorted 0.005, 0.01, 0.03, 0.04 (m = 4): 4 x 0.005, 3 x 0.01, 2 x 0.03, max(1 x 0.04, 0.06).
  assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
  assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
  out = stats.holm([0.01, float("nan"), 0.02])  # NaN is not counted in m
  assert out[0] == pytest.approx(0.02) and np.isnan(out[1]) and out[2] == pytest.approx(0.02)
  assert stats.holm([]) == []


def test_bootstrap_p_is_twice_the_smaller_tail():
  assert stats.bootstrap_p(np.full(999, 0.3)) == pytest.approx(2 / 1000)
  assert stats.bootstrap_p(np.zeros(100)) == 1.0
  # 250 of 1001 draws below 0: p = 2 (1 + 250) / (1001 + 1).
  assert stats.bootstrap_p(np.arange(-250, 751) + 0.5) == pytest.approx(2 * 251 / 1002)
  assert np.isnan(stats.bootstrap_p(np.array([0.1, np.nan])))


def test_known_positive_paired_difference_excludes_zero():
  rng = np.random.default_rng(3)
  b = [rng.uniform(0.3, 0.5, 20) for _ in range(3)]
  a = [x + 0.02 + rng.normal(0, 0.005, 20) for x in b]
  d = stats.paired_difference(a, b, num_resamples=1000)
  diffs = [x - y for x, y in zip(a, b)]
  assert d["ci_low"] > 0 and d["mean"] == pytest.approx(np.mean([x.mean() for x in diffs]))
  assert d["seed_ci_low"] < d["mean"] < d["seed_ci_high"]
  assert d["p"] == pytest.approx(2 / 1001) and d["a_better"] == 60 and d["n"] == 60
  assert d["relative_pct"] == pytest.approx(100 * d["mean"] / np.mean([x.mean() for x in b]))
  # Lower is better (MSE): a larger a is worse on every task.
  assert stats.paired_difference(a, b, lower_is_better=True, num_resamples=100)["a_better"] == 0
  assert stats.paired_difference(a, b, relative=False, num_resamples=100)["relative_pct"] is None
  same = stats.paired_difference(b, b, num_resamples=100)
  assert same["mean"] == 0 and same["p"] == 1.0 and same["ci_low"] == same["ci_high"] == 0
  with pytest.raises(ValueError, match="same task counts"):
    stats.paired_difference(a, [b[0][:3]] + b[1:])


def test_relative_change():
  assert stats.relative_change(0.01, 0.5) == pytest.approx(2.0)
  assert stats.relative_change(0.01, -0.5) == pytest.approx(2.0)
  assert stats.relative_change(1.0, 0.0) is None
