"""Results of one or more seeds, read and summarized: conditions, comparisons, statistics.

Reads ``results.json`` files (written by ``evaluate``; :func:`load_results` checks that they
are runs of one config that differ only in ``seed``) and gives :func:`summarize`'s dict,
which :mod:`bil_jax.report` renders. Per condition (seen families, unseen families and all
test tasks where results.json has "task_conditions" with both, else all test tasks):

* each row's mean over seeds of its per-seed task means, per metric of
  :data:`bil_jax.rows.REPORTED`, with the two-level bootstrap interval (seeds resampled,
  then tasks within each seed) and the t-interval over seeds;
* the paired differences of :data:`bil_jax.rows.COMPARISONS` whose rows are present, with
  the same intervals, the two-level bootstrap p-value and its Holm adjustment across the
  comparisons of each metric and condition (:mod:`bil_jax.stats`).
"""
import json
import os
from typing import List, Optional, Sequence, Tuple

import numpy as np
from flax import traverse_util

from bil_jax import rows, stats, tuning

# data.config_seed mirrors seed; xplus.lr may be one seed's --mode=tune choice given to the
# others (each results.json records the rate X+ trained at under "xplus_lr").
IGNORED_CONFIG_KEYS = ("seed", "data.config_seed", "overwrite", "meta.num_hosts",
                       "compilation_cache", "xplus.lr")
CONDITIONS = ("seen", "unseen", "all")

Loaded = List[Tuple[str, dict]]  # [(results.json path, its dict)], one per seed


class ReportError(ValueError):
  """A results file that cannot be reported on; the message names the file."""


# ---- reading ----------------------------------------------------------------------------


def results_path(path: str) -> str:
  """DIR (a workdir or its eval/ folder) or a results.json file -> the results.json path."""
  if os.path.isfile(path):
    return path
  for candidate in (os.path.join(path, "eval", "results.json"), os.path.join(path, "results.json")):
    if os.path.isfile(candidate):
      return candidate
  return os.path.join(path, "eval", "results.json")


def check_result(f: str, r: dict) -> None:
  """ReportError naming ``f`` and the key at fault unless r is a readable results.json."""
  if not isinstance(r, dict) or not {"per_task", "row_ids", "config"} <= set(r):
    raise ReportError(f"{f}: no per_task values (written by an older bil_jax; "
                      "re-run --mode=evaluate)")
  n = len(r.get("task_names") or [])
  for name, values in r["per_task"].items():
    for m, v in values.items():
      if len(v) != n:
        raise ReportError(f"{f}: per_task[{name!r}][{m!r}] has {len(v)} values for {n} "
                          "task_names")
  conds = r.get("task_conditions")
  if conds is not None and (len(conds) != n or not set(conds) <= set(CONDITIONS)):
    raise ReportError(f"{f}: task_conditions must give one of {CONDITIONS} per task name "
                      f"({len(conds)} for {n})")
  sb = r.get("strongest_baseline")
  if sb is not None and (sb not in rows.BASELINE_ROWS or sb not in present_rows(r)):
    raise ReportError(f"{f}: strongest_baseline {sb!r} is not an n-shot baseline of the "
                      f"file (one of {[b for b in rows.BASELINE_ROWS if b in present_rows(r)]})")


def _compared_config(result: dict) -> dict:
  """{'a.b': value} of a results.json's config without :data:`IGNORED_CONFIG_KEYS`."""
  flat = traverse_util.flatten_dict(result["config"], sep=".")
  return {k: v for k, v in flat.items() if k not in IGNORED_CONFIG_KEYS}


def load_results(paths: Sequence[str]) -> Loaded:
  """[(file, results.json dict)] of runs that differ only in seed; ReportError otherwise."""
  loaded = []
  for p in paths:
    f = results_path(p)
    try:
      with open(f) as fh:
        r = json.load(fh)
    except FileNotFoundError:
      raise ReportError(f"{f}: not found (run --mode=evaluate first)") from None
    except (OSError, json.JSONDecodeError) as e:
      raise ReportError(f"{f}: unreadable ({e})") from None
    check_result(f, r)
    loaded.append((f, r))
  f0, r0 = loaded[0]
  c0 = _compared_config(r0)
  seeds = {}
  for f, r in loaded:
    c = _compared_config(r)
    for k in sorted(set(c0) | set(c)):
      if c0.get(k) != c.get(k):
        raise ReportError(f"{f}: config differs from {f0} at {k} ({c.get(k)!r} vs "
                          f"{c0.get(k)!r}); runs must differ only in seed")
    if r["row_ids"] != r0["row_ids"] or set(r["per_task"]) != set(r0["per_task"]):
      raise ReportError(f"{f}: rows differ from {f0}")
    seed = seed_of(r)
    if seed in seeds:
      raise ReportError(f"{f}: seed {seed} already in {seeds[seed]}; give one run per seed")
    seeds[seed] = f
  return loaded


def seed_of(result: dict):
  return result.get("seed", result["config"].get("seed"))


def present_rows(result: dict) -> Tuple[str, ...]:
  """The row ids of a results.json dict that have per-task values, in table order."""
  return tuple(r for r in rows.ROW_IDS
               if r in result["row_ids"] and result["row_ids"][r] in result["per_task"])


def metrics_of(results: Sequence[dict]) -> Tuple[str, ...]:
  """The metrics of rows.REPORTED that every row of every file has values for."""
  return tuple(m for m in rows.REPORTED if all(
      v.get(m) and None not in v[m] for r in results for v in r["per_task"].values()))


def conditions_of(results: Sequence[dict]) -> Tuple[str, ...]:
  """('seen', 'unseen', 'all') when every file has tasks of both conditions, else ('all',)."""
  both = all({"seen", "unseen"} <= set(r.get("task_conditions") or ()) for r in results)
  return CONDITIONS if both else ("all",)


def task_index(result: dict, condition: str) -> np.ndarray:
  """Indices [n] of the tasks of ``condition`` in the file's task order."""
  n = len(result["task_names"])
  if condition == "all":
    return np.arange(n)
  return np.flatnonzero(np.asarray(result["task_conditions"]) == condition)


def groups(results: Sequence[dict], row: str, metric: str, condition: str) -> List[np.ndarray]:
  """One array per seed: row ``row``'s ``metric`` on the tasks of ``condition``."""
  return [
      np.asarray(r["per_task"][r["row_ids"][row]][metric], np.float64)[task_index(r, condition)]
      for r in results
  ]


# ---- comparisons ------------------------------------------------------------------------


def strongest_baseline(result: dict) -> Optional[str]:
  """The file's "strongest_baseline"; without it x_nshot when it is the only n-shot baseline
  present; else None (the headline is then not reported)."""
  if result.get("strongest_baseline"):
    return result["strongest_baseline"]
  present = [b for b in rows.BASELINE_ROWS if b in present_rows(result)]
  return present[0] if present == ["x_nshot"] else None


def best_lookup(results: Sequence[dict], condition: str) -> Optional[str]:
  """The lookup row with the best mean primary metric on the condition's tasks (chosen on
  the test tasks themselves: the choice favours the lookup), or None without lookups."""
  present = [r for r in rows.LOOKUP_ROWS if r in present_rows(results[0])]
  if not present:
    return None
  sign = -1.0 if rows.LOWER_IS_BETTER[rows.PRIMARY] else 1.0
  score = {
      r: sign * np.mean([g.mean() for g in groups(results, r, rows.PRIMARY, condition)])
      for r in present
  }
  return max(present, key=score.get)


def resolve_comparisons(results: Sequence[dict], condition: str) -> List[dict]:
  """rows.COMPARISONS with their stand-ins resolved: [{'role', 'a', 'b': [row id per seed],
  'key'}] for those whose rows are all present; one entry per distinct pair."""
  present = set(present_rows(results[0]))
  lookup = best_lookup(results, condition)
  out, seen = [], set()
  for comp in rows.COMPARISONS:
    if comp.b == rows.STRONGEST_BASELINE:
      b = [strongest_baseline(r) for r in results]
    elif comp.b == rows.BEST_LOOKUP:
      b = [lookup] * len(results)
    else:
      b = [comp.b] * len(results)
    if comp.a not in present or not all(x in present for x in b):
      continue
    pair = (comp.a, tuple(b))
    if pair not in seen:
      seen.add(pair)
      out.append({"role": comp.role, "a": comp.a, "b": b, "key": f"{comp.a}-{comp.b}"})
  return out


def _paired_groups(results: Sequence[dict], a: str, b: Sequence[str], metric: str,
                   condition: str) -> Tuple[list, list]:
  ga = groups(results, a, metric, condition)
  gb = [groups([r], bi, metric, condition)[0] for r, bi in zip(results, b)]
  return ga, gb


def condition_summary(results: Sequence[dict], condition: str, metrics: Sequence[str],
                      **bootstrap_kw) -> dict:
  """{'num_tasks': [per seed], 'rows': {name: {'id', metric: stats.summarize}},
  'differences': [...]} of one condition; Holm across the comparisons of each metric."""
  names = results[0]["row_ids"]
  summary_rows = {
      names[r]: {
          "id": r,
          **{m: stats.summarize(groups(results, r, m, condition), **bootstrap_kw) for m in metrics}
      } for r in present_rows(results[0])
  }
  diffs = []
  for m in metrics:
    family = []
    for c in resolve_comparisons(results, condition):
      ga, gb = _paired_groups(results, c["a"], c["b"], m, condition)
      d = stats.paired_difference(ga, gb, lower_is_better=rows.LOWER_IS_BETTER[m],
                                  relative=rows.RELATIVE[m], **bootstrap_kw)
      b_names = sorted({names[x] for x in c["b"]})
      family.append({
          "role": c["role"], "key": c["key"], "a": names[c["a"]], "b": " / ".join(b_names),
          "a_id": c["a"], "b_ids": c["b"], "metric": m, **d
      })
    for d, adj in zip(family, stats.holm([d["p"] for d in family])):
      d["p_holm"] = adj
    diffs += family
  return {
      "num_tasks": [int(task_index(r, condition).size) for r in results], "rows": summary_rows,
      "differences": diffs
  }


def tuning_edges(loaded: Loaded) -> List[dict]:
  """Tuned choices on an edge of the IS grid (:func:`bil_jax.tuning.edges`), pooled over
  seeds: [{'row': name, 'edge', 'value', 'seeds': [seed, ...]}], in row order. Files
  without a tuning record add nothing."""
  pooled = {}
  for _, r in loaded:
    record = r.get("tuning") or {}
    if "grid" in record:
      for row, found in tuning.edges(record).items():
        for edge, value in found:
          pooled.setdefault((r["row_ids"].get(row, row), edge, value), []).append(seed_of(r))
  rank = list(loaded[0][1]["row_ids"].values())
  keys = sorted(pooled, key=lambda k: rank.index(k[0]) if k[0] in rank else len(rank))
  return [{"row": row, "edge": edge, "value": value, "seeds": pooled[row, edge, value]}
          for row, edge, value in keys]


def summarize(loaded: Loaded, **bootstrap_kw) -> dict:
  """The report of one or more seeds: per condition, the rows and the differences."""
  results = [r for _, r in loaded]
  metrics = metrics_of(results)
  conditions = {
      c: condition_summary(results, c, metrics, **bootstrap_kw) for c in conditions_of(results)
  }
  headline = []
  for f, r in loaded:
    b = strongest_baseline(r)
    if "bil" in present_rows(r) and b:
      bil, base = (float(np.mean(r["per_task"][r["row_ids"][x]][rows.PRIMARY])) for x in ("bil", b))
      headline.append({
          "file": f, "seed": seed_of(r), "baseline": r["row_ids"][b],
          "relative_pct": stats.relative_change(bil - base, base)
      })
  return {
      "files": [f for f, _ in loaded], "seeds": [seed_of(r) for r in results],
      "primary": rows.PRIMARY, "metrics": list(metrics),
      "num_resamples": bootstrap_kw.get("num_resamples", stats.NUM_RESAMPLES),
      "conditions": conditions, "headline": headline, "tuning_edges": tuning_edges(loaded)
  }
