"""Tables of evaluation results with their uncertainty: one run, or several seeds.

One run (``evaluate`` writes it to ``WORKDIR/eval/results.md``): each row's mean over test
tasks with a 95% bootstrap interval, and the paired differences that carry the paper's claims
(:data:`CLAIMS`), each with mean, 95% bootstrap interval, relative change and a Wilcoxon
signed-rank p-value over tasks.

Several seeds::

  python -m bil_jax.report DIR [DIR ...] [--out FILE.md]

reads each ``DIR/eval/results.json`` (runs of one config that differ only in ``seed``) and
prints one table of each row's mean ± standard deviation over seeds, the paired differences
pooled over seeds and tasks, and each seed's headline gain (relative SSIM of BiL-X (n-shot)
over X (n-shot)). ``--out`` also writes the Markdown to FILE.md and the numbers to FILE.json.
"""
import argparse
import json
import os
import sys
from typing import Dict, List, Sequence, Tuple

import numpy as np

from bil_jax import rows, stats
from bil_jax.io_utils import flatten  # {'a': {'b': v}} -> {'a.b': v}

METRICS = rows.METRIC_KEYS
LABELS, LOWER_IS_BETTER, RELATIVE = rows.LABELS, rows.LOWER_IS_BETTER, rows.RELATIVE
# (a, b): the differences a - b behind the paper's claims (Tables 1-3).
CLAIMS = (("bil", "x_nshot"), ("bil", "bil_noaux"), ("x_nshot", "x"))
IGNORED_CONFIG_KEYS = ("seed", "overwrite", "meta.num_hosts", "compilation_cache")


class ReportError(ValueError):
  """A results file that cannot be reported on; the message names the file."""


def metrics_of(per_task: Dict[str, Dict[str, list]]) -> Tuple[str, ...]:
  """The metrics of METRICS that every row has values for (LPIPS only when computed)."""
  return tuple(m for m in METRICS
               if all(r.get(m) and None not in r[m] for r in per_task.values()))


def row_ids_of(result: dict) -> Dict[str, str]:
  """{row id (rows.ROW_IDS): row name} of a results.json dict."""
  return dict(result["row_ids"])


def summarize_rows(per_task: Dict[str, Dict[str, list]]) -> Dict[str, Dict[str, dict]]:
  """{row: {metric: stats.summarize(values over tasks)}}."""
  ms = metrics_of(per_task)
  return {name: {m: stats.summarize(vals[m]) for m in ms} for name, vals in per_task.items()}


def differences(per_task: Dict[str, Dict[str, list]], row_ids: Dict[str, str]) -> List[dict]:
  """The CLAIMS' paired differences a - b for every metric, over the tasks of per_task."""
  out = []
  for a, b in CLAIMS:
    if row_ids.get(a) not in per_task or row_ids.get(b) not in per_task:
      continue
    for m in metrics_of(per_task):
      d = stats.paired_difference(per_task[row_ids[a]][m], per_task[row_ids[b]][m],
                                  lower_is_better=LOWER_IS_BETTER[m], relative=RELATIVE[m])
      out.append({"a": row_ids[a], "b": row_ids[b], "claim": f"{a}-{b}", "metric": m, **d})
  return out


def run_summary(per_task: Dict[str, Dict[str, list]], row_ids: Dict[str, str]) -> dict:
  """{'rows': summarize_rows, 'differences': differences} of one run."""
  return {"rows": summarize_rows(per_task), "differences": differences(per_task, row_ids)}


def _fmt_signed(v: float) -> str:
  return f"{v:+.4f}"


def _fmt_pct(v) -> str:
  return "—" if v is None else f"{v:+.1f}%"


def _fmt_p(p: float) -> str:
  return "n/a" if not np.isfinite(p) else (f"{p:.3f}" if p >= 0.001 else f"{p:.1e}")


def differences_markdown(diffs: Sequence[dict], unit: str) -> str:
  """Markdown table of paired differences (``unit``: what n counts, e.g. 'test tasks')."""
  lines = [f"| Difference | Metric | Mean [95% CI] | Relative | Wilcoxon p | A better on |",
           "|---|---|---|---|---|---|"]
  for d in diffs:
    lines.append(
        f"| {d['a']} − {d['b']} | {LABELS[d['metric']]} | {_fmt_signed(d['mean'])} "
        f"[{_fmt_signed(d['ci_low'])}, {_fmt_signed(d['ci_high'])}] | "
        f"{_fmt_pct(d['relative_pct'])} | {_fmt_p(d['p_wilcoxon'])} | "
        f"{d['a_better']}/{d['n']} {unit} |")
  return "\n".join(lines) + "\n"


def run_markdown(summary: dict) -> str:
  """results.md of one run: rows with 95% bootstrap intervals, then the differences."""
  rows = summary["rows"]
  n = next((s["n"] for r in rows.values() for s in r.values()), 0)
  head = "| Model | " + " | ".join(LABELS[m] for m in METRICS) + " |"
  lines = [f"Mean over {n} test tasks [95% bootstrap interval over tasks].", "", head,
           "|---|---|---|---|---|"]
  for name, r in rows.items():
    cells = [f"{r[m]['mean']:.3f} [{r[m]['ci_low']:.3f}, {r[m]['ci_high']:.3f}]"
             if m in r else "n/a" for m in METRICS]
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  lines += ["", "Paired differences A − B over the same test tasks (Wilcoxon signed-rank, "
            "two-sided; relative = mean difference / |mean of B|; PSNR difference in dB).", ""]
  return "\n".join(lines) + "\n" + differences_markdown(summary["differences"], "tasks")


# ---- several seeds -----------------------------------------------------------------------


def results_path(path: str) -> str:
  """DIR (a workdir or its eval/ folder) or a results.json file -> the results.json path."""
  if os.path.isfile(path):
    return path
  for candidate in (os.path.join(path, "eval", "results.json"),
                    os.path.join(path, "results.json")):
    if os.path.isfile(candidate):
      return candidate
  return os.path.join(path, "eval", "results.json")


def load_results(paths: Sequence[str]) -> List[Tuple[str, dict]]:
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
    if not isinstance(r, dict) or not {"per_task", "row_ids", "config"} <= set(r):
      raise ReportError(f"{f}: no per_task values (written by an older bil_jax; "
                        "re-run --mode=evaluate)")
    loaded.append((f, r))
  f0, r0 = loaded[0]
  c0 = {k: v for k, v in flatten(r0["config"]).items() if k not in IGNORED_CONFIG_KEYS}
  seeds = {}
  for f, r in loaded:
    c = {k: v for k, v in flatten(r["config"]).items() if k not in IGNORED_CONFIG_KEYS}
    for k in sorted(set(c0) | set(c)):
      if c0.get(k) != c.get(k):
        raise ReportError(f"{f}: config differs from {f0} at {k} ({c.get(k)!r} vs "
                          f"{c0.get(k)!r}); runs must differ only in seed")
    if r.get("task_names") != r0.get("task_names") or list(r["per_task"]) != list(r0["per_task"]):
      raise ReportError(f"{f}: test tasks or rows differ from {f0}")
    seed = r.get("seed", r["config"].get("seed"))
    if seed in seeds:
      raise ReportError(f"{f}: seed {seed} already in {seeds[seed]}; give one run per seed")
    seeds[seed] = f
  return loaded


def seeds_summary(loaded: Sequence[Tuple[str, dict]]) -> dict:
  """Rows' mean ± std over seeds, differences pooled over seeds x tasks, per-seed headline."""
  results = [r for _, r in loaded]
  names = list(results[0]["per_task"])
  ms = metrics_of(results[0]["per_task"])
  rows = {}
  for name in names:
    rows[name] = {}
    for m in ms:
      per_seed = [float(np.mean(r["per_task"][name][m])) for r in results]
      rows[name][m] = {"mean": float(np.mean(per_seed)),
                       "std": float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else 0.0,
                       "per_seed": per_seed}
  pooled = {name: {m: [v for r in results for v in r["per_task"][name][m]] for m in ms}
            for name in names}
  ids = row_ids_of(results[0])
  headline = []
  for f, r in loaded:
    bil, x = r["per_task"][ids["bil"]]["ssim"], r["per_task"][ids["x_nshot"]]["ssim"]
    headline.append({"file": f, "seed": r.get("seed"), "relative_ssim_pct":
                     stats.relative_change(float(np.mean(bil) - np.mean(x)),
                                           float(np.mean(x)))})
  return {"files": [f for f, _ in loaded], "seeds": [r.get("seed") for r in results],
          "num_test_tasks": len(results[0].get("task_names") or []), "rows": rows,
          "differences": differences(pooled, ids), "headline": headline,
          "headline_name": f"{ids['bil']} vs {ids['x_nshot']}: relative SSIM"}


def seeds_markdown(summary: dict) -> str:
  """The Markdown of :func:`seeds_summary`."""
  k, t = len(summary["seeds"]), summary["num_test_tasks"]
  lines = [f"Mean ± standard deviation over {k} seeds ({', '.join(map(str, summary['seeds']))})"
           f" of each run's mean over {t} test tasks.", "",
           "| Model | " + " | ".join(LABELS[m] for m in METRICS) + " |", "|---|---|---|---|---|"]
  for name, r in summary["rows"].items():
    cells = [f"{r[m]['mean']:.3f} ± {r[m]['std']:.3f}" if m in r else "n/a" for m in METRICS]
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  lines += ["", f"Paired differences A − B pooled over seeds and tasks ({k} × {t} pairs; "
            "bootstrap and Wilcoxon treat them as independent).", "",
            differences_markdown(summary["differences"], "pairs").rstrip("\n"), "",
            f"Headline per seed ({summary['headline_name']}):", ""]
  lines += [f"- seed {h['seed']}: {_fmt_pct(h['relative_ssim_pct'])} ({h['file']})"
            for h in summary["headline"]]
  return "\n".join(lines) + "\n"


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m bil_jax.report", description=__doc__.split(
      "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("dirs", nargs="+", help="workdirs (or their results.json), one per seed")
  parser.add_argument("--out", default="", help="also write FILE.md and FILE.json")
  args = parser.parse_args(argv)
  try:
    summary = seeds_summary(load_results(args.dirs))
  except ReportError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  text = seeds_markdown(summary)
  print(text, end="")
  if args.out:
    base = args.out[:-3] if args.out.endswith(".md") else args.out
    for path, content in ((base + ".md", text),
                          (base + ".json", json.dumps(summary, indent=1))):
      os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
      with open(path + ".tmp", "w") as fh:
        fh.write(content)
      os.replace(path + ".tmp", path)
  return 0


if __name__ == "__main__":
  sys.exit(main())
