"""The results table with its uncertainty, for one run or several seeds.

One run: ``evaluate`` calls :func:`write_run`, which writes ``WORKDIR/eval/results.json``
(with the summary), ``results.md`` and TensorBoard scalars and text under ``WORKDIR/eval``.

Several seeds::

  python -m bil_jax.report DIR [DIR ...] [--out FILE.md]

reads each ``DIR/eval/results.json`` (runs of one config that differ only in ``seed``, at
least :data:`MIN_SEEDS` of them; fewer gives a one-line warning) and prints the same tables
over all of them, then each seed's headline gain; ``--out`` also writes FILE.md and FILE.json.

The numbers are :func:`bil_jax.results.summarize`'s: per condition (seen families, unseen
families, all test tasks), each row's mean with its two-level bootstrap interval, and the
paired differences of :data:`bil_jax.rows.COMPARISONS` with the two-level interval, the
seed-level t-interval, the bootstrap p-value and its Holm adjustment.
"""
import json
import math
import os
import sys
from typing import Dict, Optional, Sequence

import numpy as np
from absl import flags

from bil_jax import cli, config_lib, io_utils, rows, stats
from bil_jax.results import ReportError, load_results, summarize

PROG = "python -m bil_jax.report"
MIN_SEEDS = 5
CONDITION_TITLES = {"seen": "Seen families", "unseen": "Unseen families", "all": "All test tasks"}
DIGITS = {"ssim": 3, "psnr": 2, "lpips": 3, "mse": 4}


def _fmt(v, digits: int, signed: bool = False) -> str:
  if v is None or not math.isfinite(v):
    return "n/a"
  return f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"


def _interval(s: dict, digits: int, signed: bool = False, prefix: str = "ci") -> str:
  lo, hi = s[f"{prefix}_low"], s[f"{prefix}_high"]
  return f"[{_fmt(lo, digits, signed)}, {_fmt(hi, digits, signed)}]"


def _fmt_pct(v) -> str:
  return "—" if v is None else f"{v:+.1f}%"


def _fmt_p(p: float) -> str:
  return "n/a" if not math.isfinite(p) else (f"{p:.3f}" if p >= 0.001 else f"{p:.1e}")


def protocol_lines(summary: dict) -> list:
  """The two lines that state the protocol: what is resampled, which correction."""
  k, b = len(summary["seeds"]), summary["num_resamples"]
  level = ("seeds resampled, then test tasks within each seed; beside it the t-interval over "
           f"the {k} per-seed means" if k > 1 else
           "one seed, so test tasks resampled; pool seeds with python -m bil_jax.report")
  return [
      f"Protocol: {k} seed(s); means are over seeds of each seed's mean over its test "
      f"tasks; 95% intervals are percentile bootstraps ({b:,} resamples, fixed seed), "
      f"{level}.",
      "p: two-sided bootstrap p of A − B = 0 from the same resamples, Holm-adjusted across "
      "the comparisons of each metric and condition. SSIM is the primary metric; PSNR "
      "beside it (MSE is the same measurement); LPIPS where computed."
  ]


def seeds_warning(num_seeds: int) -> str:
  """One line when there are fewer than MIN_SEEDS seeds, else ''."""
  if num_seeds >= MIN_SEEDS:
    return ""
  return (f"warning: {num_seeds} seed(s); the protocol asks for at least {MIN_SEEDS} "
          "(with fewer, between-seed variation is poorly estimated)")


def edges_line(summary: dict) -> str:
  """One line naming the tuned choices on an edge of the IS grid, else ''."""
  found = summary.get("tuning_edges") or []
  if not found:
    return ""
  k = len(summary["seeds"])
  items = [
      f"{e['row']}, {e['edge']} ({e['value']:g}) in {len(e['seeds'])}/{k} seed(s)" for e in found
  ]
  return ("note: tuned on an edge of the IS grid, which a wider grid might move (and raise "
          "that row's score): " + "; ".join(items))


def rows_markdown(cond: dict, metrics: Sequence[str]) -> list:
  """Lines of the table of row means [two-level 95% interval]."""
  lines = [
      "| Model | " + " | ".join(rows.LABELS[m] for m in metrics) + " |",
      "|---|" + "---|" * len(metrics)
  ]
  for name, r in cond["rows"].items():
    cells = [f"{_fmt(r[m]['mean'], DIGITS[m])} {_interval(r[m], DIGITS[m])}" for m in metrics]
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  return lines


def differences_markdown(cond: dict, num_seeds: int) -> list:
  """Lines of the table of paired differences A − B."""
  seed_col = num_seeds > 1
  lines = [
      "| Comparison | Difference | Metric | Mean [95% two-level] | " +
      ("Seed-level t 95% | " if seed_col else "") + "Relative | p | Holm p | A better on |",
      "|---|---|---|---|" + ("---|" if seed_col else "") + "---|---|---|---|"
  ]
  for d in cond["differences"]:
    digits = DIGITS[d["metric"]] + 1
    seed = f"{_interval(d, digits, True, 'seed_ci')} | " if seed_col else ""
    lines.append(f"| {d['role']} | {d['a']} − {d['b']} | {rows.LABELS[d['metric']]} | "
                 f"{_fmt(d['mean'], digits, True)} {_interval(d, digits, True)} | {seed}"
                 f"{_fmt_pct(d['relative_pct'])} | {_fmt_p(d['p'])} | {_fmt_p(d['p_holm'])} | "
                 f"{d['a_better']}/{d['n']} |")
  return lines


def markdown(summary: dict) -> str:
  """results.md / seeds.md: the protocol, then per condition the rows and the differences."""
  k = len(summary["seeds"])
  lines = protocol_lines(summary)
  if k > 1 and seeds_warning(k):
    lines.append(seeds_warning(k))
  if edges_line(summary):
    lines.append(edges_line(summary))
  for name, cond in summary["conditions"].items():
    counts = sorted(set(cond["num_tasks"]))
    tasks = (f"{counts[0]} test tasks" if len(counts) == 1 else
             f"{counts[0]}-{counts[-1]} test tasks") + (" per seed" if k > 1 else "")
    lines += ["", f"### {CONDITION_TITLES[name]} ({tasks})", ""]
    lines += rows_markdown(cond, summary["metrics"])
    lines += [
        "", "Paired differences A − B on the same tasks (relative = mean difference / "
        "|mean of B|; PSNR difference in dB).", ""
    ]
    lines += differences_markdown(cond, k)
  if k > 1 and summary["headline"]:
    lines += [
        "", f"Headline per seed (relative {rows.LABELS[summary['primary']]} of BiL over "
        "the strongest baseline, all test tasks):", ""
    ]
    lines += [
        f"- seed {h['seed']}: {_fmt_pct(h['relative_pct'])} vs {h['baseline']} "
        f"({h['file']})" for h in summary["headline"]
    ]
  return "\n".join(lines) + "\n"


def json_safe(tree):
  """The tree with every non-finite float replaced by None (strict JSON)."""
  if isinstance(tree, dict):
    return {k: json_safe(v) for k, v in tree.items()}
  if isinstance(tree, (list, tuple)):
    return [json_safe(v) for v in tree]
  if isinstance(tree, float) and not math.isfinite(tree):
    return None
  return tree


def write_summaries(writer, config, summary: dict, table: str) -> None:
  """TensorBoard: hyperparameters; '[condition/]<row id>/<metric>' means and interval ends;
  '[condition/]diff/<a>-<b>/<metric>' paired differences; the Markdown as text (step 0)."""
  scalars = {}
  for cname, cond in summary["conditions"].items():
    pre = "" if cname == "all" else f"{cname}/"
    for r in cond["rows"].values():
      for m in summary["metrics"]:
        s = r[m]
        scalars.update({
            f"{pre}{r['id']}/{m}": s["mean"], f"{pre}{r['id']}/{m}_ci_low": s["ci_low"],
            f"{pre}{r['id']}/{m}_ci_high": s["ci_high"]
        })
    for d in cond["differences"]:
      scalars[f"{pre}diff/{d['key']}/{d['metric']}"] = d["mean"]
  flat = config_lib.flat_config(config)
  writer.write_hparams(
      {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in flat.items()})
  writer.write_scalars(0, scalars)
  writer.write_texts(0, {"results": table})
  writer.flush()


def write_run(out_dir: str, result: dict, config, write_files: bool = True,
              images: Optional[Dict[str, np.ndarray]] = None) -> str:
  """One run's outputs in out_dir: result (a results.json dict without 'summary') gets its
  summary; TensorBoard scalars, text and ``images`` ({name: [1, H, W, 3] in [0, 1]});
  results.json and results.md when ``write_files`` (process 0). Returns the Markdown."""
  from clu import metric_writers  # pylint: disable=g-import-not-at-top
  path = os.path.join(out_dir, "results.json")
  summary = summarize([(path, result)])
  result["summary"] = summary
  table = markdown(summary)
  writer = metric_writers.create_default_writer(out_dir, just_logging=not write_files)
  if images:
    writer.write_images(0, images)
  write_summaries(writer, config, summary, table)
  if write_files:
    io_utils.write_atomic(path, json.dumps(json_safe(result), indent=1, default=str))
    io_utils.write_atomic(os.path.join(out_dir, "results.md"), table)
  return table


def _define_flags() -> flags.FlagValues:
  """The command's flags, in their own FlagValues (importing this module defines none)."""
  fv = flags.FlagValues()
  flags.DEFINE_string("out", "", "Also write FILE.md and FILE.json.", flag_values=fv)
  flags.DEFINE_integer("resamples", stats.NUM_RESAMPLES, "Bootstrap resamples.", lower_bound=1,
                       flag_values=fv)
  flags.DEFINE_bool("help", False, "Show this help.", flag_values=fv)
  return fv


def main(argv: Optional[Sequence[str]] = None) -> int:
  """``python -m bil_jax.report DIR [DIR ...] [--out=FILE.md] [--resamples=N]``.

  Args:
    argv: the arguments after the program name (default ``sys.argv[1:]``): the workdirs
      (or their results.json files), one per seed, and the flags, in any order.

  Returns:
    The exit status: 0, or 1 after a one-line ``error: ...`` (bad flag, no workdir, runs
    that do not pool).
  """
  fv = _define_flags()
  try:
    dirs = fv([PROG, *(sys.argv[1:] if argv is None else argv)])[1:]
  except flags.Error as e:
    cli.fail(cli.error_text(e))
  if fv.help:
    print(f"usage: {PROG} DIR [DIR ...] [--out=FILE.md] [--resamples=N]\n\n"
          f"{__doc__.split(chr(10) * 2)[0]}\n\n{fv.get_help(include_special_flags=False)}")
    return 0
  if not dirs:
    cli.fail("no workdir given: python -m bil_jax.report DIR [DIR ...]")
  try:
    summary = summarize(load_results(dirs), num_resamples=fv.resamples)
  except ReportError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  if seeds_warning(len(summary["seeds"])):
    print(seeds_warning(len(summary["seeds"])), file=sys.stderr)
  text = markdown(summary)
  print(text, end="")
  if fv.out:
    base = fv.out[:-3] if fv.out.endswith(".md") else fv.out
    io_utils.write_atomic(base + ".md", text)
    io_utils.write_atomic(base + ".json", json.dumps(json_safe(summary), indent=1))
  return 0


if __name__ == "__main__":
  sys.exit(main())
