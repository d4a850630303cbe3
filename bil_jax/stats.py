"""Uncertainty of evaluation results over seeds and test tasks.

The design has two levels: seeds (each replicates the whole pipeline: data, training,
evaluation) and, within a seed, test tasks (scenes, identities or clips). Every row of the
results table is scored on the same tasks of a seed, so two rows are compared task by task
(paired). Values are given as ``groups``: one 1-D sequence per seed, the values of that
seed's tasks (seeds may have different task counts).

* :func:`task_bootstrap` / :func:`bootstrap_mean_ci`: the one-level percentile bootstrap of a
  mean over tasks.
* :func:`two_level_bootstrap`: resample seeds, then tasks within each resampled seed; the
  statistic is the mean over seeds of each seed's task mean. With one seed it is the task
  bootstrap (the same draws).
* :func:`seed_t_interval`: Student-t interval over the per-seed means.
* :func:`bootstrap_p`: two-sided p-value of "mean = 0" from a bootstrap distribution.
* :func:`holm`: Holm's step-down adjustment of a family of p-values.
* :func:`summarize` / :func:`paired_difference`: the numbers a table shows for one row or for
  one difference of two rows.

All functions are pure: the same inputs (and seed) give the same outputs.
"""
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import scipy.stats

NUM_RESAMPLES = 10_000
CONFIDENCE = 0.95
SEED = 0
CHUNK = 1000  # resamples drawn at once: memory [CHUNK, seeds, tasks]


def _as_1d(values: Sequence[float]) -> np.ndarray:
  """Values as a float64 vector [n]; one-line error for anything not 1-D."""
  v = np.asarray(values, np.float64)
  if v.ndim != 1:
    raise ValueError(f"expected a 1-D sequence of values, got shape {v.shape}")
  return v


def _as_groups(groups: Sequence[Sequence[float]]) -> List[np.ndarray]:
  """Per-seed values as float64 vectors; ValueError for no seeds or a seed without tasks."""
  gs = [_as_1d(g) for g in groups]
  if not gs or any(g.size == 0 for g in gs):
    raise ValueError(f"need at least one seed and one task per seed, got task counts "
                     f"{[g.size for g in gs]}")
  return gs


def task_bootstrap(values: Sequence[float], num_resamples: int = NUM_RESAMPLES,
                   seed: int = SEED) -> np.ndarray:
  """The means of ``num_resamples`` resamples (with replacement) of values [n] -> [B]."""
  v = _as_1d(values)
  rng = np.random.default_rng(seed)
  means = []
  for start in range(0, num_resamples, CHUNK):
    idx = rng.integers(0, v.size, (min(CHUNK, num_resamples - start), v.size))
    means.append(v[idx].mean(axis=1))
  return np.concatenate(means)


def two_level_bootstrap(groups: Sequence[Sequence[float]], num_resamples: int = NUM_RESAMPLES,
                        seed: int = SEED) -> np.ndarray:
  """Two-level bootstrap distribution [B] of the mean over seeds of the per-seed task means.

  Each resample draws S seeds with replacement from the S groups, then, for each drawn seed,
  as many tasks as it has with replacement from its own tasks. With S = 1 this is
  :func:`task_bootstrap` of the one group (the same draws).
  """
  gs = _as_groups(groups)
  if len(gs) == 1:
    return task_bootstrap(gs[0], num_resamples, seed)
  s = len(gs)
  counts = np.array([g.size for g in gs])
  padded = np.zeros((s, counts.max()))
  for i, g in enumerate(gs):
    padded[i, :g.size] = g
  rng = np.random.default_rng(seed)
  means = []
  for start in range(0, num_resamples, CHUNK):
    b = min(CHUNK, num_resamples - start)
    which = rng.integers(0, s, (b, s))  # [b, S] seeds
    n = counts[which]  # [b, S]
    u = rng.random((b, s, counts.max()))
    idx = np.minimum((u * n[..., None]).astype(np.int64), n[..., None] - 1)  # [b, S, nmax]
    used = np.arange(counts.max()) < n[..., None]  # first n_s draws
    vals = padded[which[..., None], idx] * used
    means.append((vals.sum(axis=2) / n).mean(axis=1))
  return np.concatenate(means)


def percentile_interval(distribution: np.ndarray,
                        confidence: float = CONFIDENCE) -> Tuple[float, float]:
  """The (1-c)/2 and (1+c)/2 percentiles of a bootstrap distribution [B]."""
  alpha = (1.0 - confidence) / 2.0
  lo, hi = np.percentile(distribution, [100.0 * alpha, 100.0 * (1.0 - alpha)])
  return float(lo), float(hi)


def bootstrap_mean_ci(values: Sequence[float], confidence: float = CONFIDENCE,
                      num_resamples: int = NUM_RESAMPLES, seed: int = SEED) -> Tuple[float, float]:
  """Percentile bootstrap interval of the mean of values [n] over tasks.

  n = 1 gives (v, v); n = 0 gives (nan, nan).
  """
  v = _as_1d(values)
  if v.size == 0:
    return float("nan"), float("nan")
  return percentile_interval(task_bootstrap(v, num_resamples, seed), confidence)


def bootstrap_p(distribution: np.ndarray) -> float:
  """Two-sided bootstrap p-value of "the mean is 0": twice the smaller tail at 0, [B] draws.

  p = min(1, 2 * min(1 + #{x <= 0}, 1 + #{x >= 0}) / (B + 1)), so the smallest p is about
  2 / B; a distribution that is exactly 0 everywhere gives 1.
  """
  d = np.asarray(distribution, np.float64)
  if np.isnan(d).any():
    return float("nan")
  tail = min(np.sum(d <= 0), np.sum(d >= 0))
  return float(min(1.0, 2.0 * (1 + tail) / (d.size + 1)))


def seed_t_interval(per_seed: Sequence[float],
                    confidence: float = CONFIDENCE) -> Tuple[float, float]:
  """Student-t interval of the mean of per-seed values [S] (S - 1 degrees of freedom);
  (nan, nan) for fewer than 2 seeds."""
  v = _as_1d(per_seed)
  if v.size < 2:
    return float("nan"), float("nan")
  half = scipy.stats.t.ppf(0.5 + confidence / 2.0, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size)
  return float(v.mean() - half), float(v.mean() + half)


def holm(pvalues: Sequence[float]) -> List[float]:
  """Holm's step-down adjusted p-values, in the order given.

  With the m finite p-values sorted ascending, p_(1) <= ... <= p_(m), the adjusted value of
  p_(i) is max over j <= i of min(1, (m - j + 1) p_(j)). NaN stays NaN and is not counted in m.
  """
  p = np.asarray(pvalues, np.float64)
  out = np.full(p.shape, np.nan)
  finite = np.flatnonzero(np.isfinite(p))
  order = finite[np.argsort(p[finite], kind="stable")]
  m = order.size
  running = 0.0
  for j, i in enumerate(order):
    running = max(running, min(1.0, (m - j) * p[i]))
    out[i] = running
  return out.tolist()


def relative_change(difference: float, base: float) -> Optional[float]:
  """100 * difference / |base| (percent), or None when base is 0 or not finite."""
  if not np.isfinite(base) or base == 0:
    return None
  return float(100.0 * difference / abs(base))


def _describe(groups: List[np.ndarray], num_resamples: int,
              seed: int) -> Tuple[Dict[str, object], np.ndarray]:
  """(:func:`summarize`'s dict, the two-level bootstrap distribution [B]) of groups."""
  per_seed = [float(g.mean()) for g in groups]
  dist = two_level_bootstrap(groups, num_resamples, seed)
  lo, hi = percentile_interval(dist)
  slo, shi = seed_t_interval(per_seed)
  return {
      "mean": float(np.mean(per_seed)), "ci_low": lo, "ci_high": hi, "seed_ci_low": slo,
      "seed_ci_high": shi, "per_seed": per_seed, "n": int(sum(g.size for g in groups)),
      "seeds": len(groups)
  }, dist


def summarize(groups: Sequence[Sequence[float]], num_resamples: int = NUM_RESAMPLES,
              seed: int = SEED) -> Dict[str, object]:
  """A row's mean over seeds of per-seed task means, with both intervals.

  Returns {'mean', 'ci_low', 'ci_high' (two-level bootstrap), 'seed_ci_low', 'seed_ci_high'
  (t over seeds; nan for one seed), 'per_seed' [S], 'n' (tasks in all), 'seeds' (S)}.
  """
  return _describe(_as_groups(groups), num_resamples, seed)[0]


def paired_difference(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]],
                      lower_is_better: bool = False, relative: bool = True,
                      num_resamples: int = NUM_RESAMPLES, seed: int = SEED) -> Dict[str, object]:
  """Statistics of the paired difference a - b; a and b are groups (one per seed) in the
  same seed and task order.

  Returns :func:`summarize` of d = a - b, 'p' (:func:`bootstrap_p` of its two-level
  distribution), 'relative_pct' (100 * mean(d) / |mean(b)|, None if ``relative`` is False
  or mean(b) is 0) and 'a_better' (the number of seed x task pairs where a beats b in the
  metric's direction).
  """
  ga, gb = _as_groups(a), _as_groups(b)
  if [g.size for g in ga] != [g.size for g in gb]:
    raise ValueError(f"paired values need the same task counts per seed, got "
                     f"{[g.size for g in ga]} and {[g.size for g in gb]}")
  d = [x - y for x, y in zip(ga, gb)]
  out, dist = _describe(d, num_resamples, seed)
  out["p"] = bootstrap_p(dist)
  base = float(np.mean([g.mean() for g in gb]))
  out["relative_pct"] = relative_change(out["mean"], base) if relative else None
  flat = np.concatenate(d)
  out["a_better"] = int(np.sum(flat < 0) if lower_is_better else np.sum(flat > 0))
  return out
