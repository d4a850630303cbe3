"""Uncertainty of evaluation results: bootstrap intervals and paired tests over test tasks.

The unit of replication is the test task (a scene, identity or clip): every row of the
ablation table is scored on the same tasks, so two rows are compared task by task (paired).

* :func:`bootstrap_mean_ci`: percentile bootstrap interval of a mean, fixed seed.
* :func:`wilcoxon_p`: two-sided paired Wilcoxon signed-rank p-value (``scipy.stats.wilcoxon``).
* :func:`summarize` / :func:`paired_difference`: the numbers a table shows for one row or for
  one difference of two rows.

All functions are pure: the same inputs (and seed) give the same outputs.
"""
from typing import Dict, Optional, Sequence, Tuple
import warnings

import numpy as np
import scipy.stats

NUM_RESAMPLES = 10_000
CONFIDENCE = 0.95
SEED = 0


def _as_1d(values: Sequence[float]) -> np.ndarray:
  """Values as a float64 vector [n]; one-line error for anything not 1-D."""
  v = np.asarray(values, np.float64)
  if v.ndim != 1:
    raise ValueError(f"expected a 1-D sequence of values, got shape {v.shape}")
  return v


def bootstrap_mean_ci(values: Sequence[float], confidence: float = CONFIDENCE,
                      num_resamples: int = NUM_RESAMPLES, seed: int = SEED,
                      chunk: int = 1000) -> Tuple[float, float]:
  """Percentile bootstrap interval of the mean of ``values`` [n].

  Draws ``num_resamples`` samples of size n with replacement (numpy Generator seeded with
  ``seed``), takes each sample's mean and returns the (1-c)/2 and (1+c)/2 percentiles.
  n = 1 gives (v, v); n = 0 gives (nan, nan).
  """
  v = _as_1d(values)
  n = v.shape[0]
  if n == 0:
    return float("nan"), float("nan")
  if n == 1:
    return float(v[0]), float(v[0])
  rng = np.random.default_rng(seed)
  means = []
  for start in range(0, num_resamples, chunk):   # bounded memory: [chunk, n] at a time
    idx = rng.integers(0, n, (min(chunk, num_resamples - start), n))
    means.append(v[idx].mean(axis=1))
  alpha = (1.0 - confidence) / 2.0
  lo, hi = np.percentile(np.concatenate(means), [100.0 * alpha, 100.0 * (1.0 - alpha)])
  return float(lo), float(hi)


def wilcoxon_p(differences: Sequence[float]) -> float:
  """Two-sided Wilcoxon signed-rank p-value of paired differences [n].

  ``scipy.stats.wilcoxon`` with its defaults (zero differences dropped, exact distribution
  for small n). All differences zero (or none) gives p = 1.0: no evidence of a difference.
  NaN differences give nan.
  """
  d = _as_1d(differences)
  if np.isnan(d).any():
    return float("nan")
  if d.size == 0 or not np.any(d != 0):
    return 1.0
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)   # few nonzero values: normal approx. warns
    return float(scipy.stats.wilcoxon(d).pvalue)


def relative_change(difference: float, base: float) -> Optional[float]:
  """100 * difference / |base| (percent), or None when base is 0 or not finite."""
  if not np.isfinite(base) or base == 0:
    return None
  return float(100.0 * difference / abs(base))


def summarize(values: Sequence[float], **bootstrap_kw) -> Dict[str, float]:
  """{'mean', 'ci_low', 'ci_high', 'n'} of values [n] (bootstrap interval of the mean)."""
  v = _as_1d(values)
  lo, hi = bootstrap_mean_ci(v, **bootstrap_kw)
  return {"mean": float(v.mean()) if v.size else float("nan"), "ci_low": lo, "ci_high": hi,
          "n": int(v.size)}


def paired_difference(a: Sequence[float], b: Sequence[float], lower_is_better: bool = False,
                      relative: bool = True, **bootstrap_kw) -> Dict[str, Optional[float]]:
  """Statistics of the paired difference a - b over tasks; a and b are [n], same task order.

  Returns {'mean', 'ci_low', 'ci_high', 'n'} of d = a - b, 'relative_pct' (100 * mean(d) /
  |mean(b)|, None if ``relative`` is False or mean(b) is 0), 'p_wilcoxon' and 'a_better'
  (the number of tasks where a beats b in the metric's direction).
  """
  a, b = _as_1d(a), _as_1d(b)
  if a.shape != b.shape:
    raise ValueError(f"paired values need the same length, got {a.shape[0]} and {b.shape[0]}")
  d = a - b
  out = summarize(d, **bootstrap_kw)
  out["relative_pct"] = relative_change(out["mean"], float(b.mean())) if relative and b.size \
      else None
  out["p_wilcoxon"] = wilcoxon_p(d)
  out["a_better"] = int(np.sum(d < 0) if lower_is_better else np.sum(d > 0))
  return out
