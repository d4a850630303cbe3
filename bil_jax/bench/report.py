"""The benchmark's tables (Markdown) and plots (matplotlib, Agg).

* :func:`cost_table` / :func:`plot_cost`: step time, compile time, peak memory, FLOPs.
* :func:`compile_table`: ``--compile_only``'s FLOPs, memory analysis and one step.
* :func:`fidelity_table` / :func:`plot_fidelity`: cosine and relative error to second_order.
* :func:`outcome_table` / :func:`plot_outcome`: held-out L1 against time per step and peak
  memory, with the Pareto front (no other estimator is both cheaper and better).
"""
from typing import List, Optional


def fmt_bytes(b) -> str:
  """Bytes as MiB with one decimal, or 'n/a'."""
  return "n/a" if b is None else f"{b / 2 ** 20:.1f}"


def _plt():
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  return plt


def cost_table(records: list, peaks: dict) -> str:
  """Markdown: one row per JAX configuration, PyTorch reference columns where timed."""
  jax_recs = [r for r in records if r.get("implementation", "jax") == "jax"]
  ref = {(r["estimator"], r["inner_steps"], r["meta_batch"]): r
         for r in records
         if r.get("implementation") == "pytorch_eager"}
  lines = []
  if jax_recs:
    r0 = jax_recs[0]
    lines += [
        f"{r0['model']} {r0['image_size']}x{r0.get('image_width', r0['image_size'])}, "
        f"ngf {r0['ngf']}, ndf {r0['ndf']}, {r0['num_classes']} classes, {r0['shots']} "
        f"shots + {r0['queries']} queries per task, inner {r0['inner_optimizer']}, "
        f"lambda_b {r0.get('lambda_b', 0)}; device {r0['device']} ({r0['platform']}); "
        f"measured peaks: conv {peaks['conv_peak_flops_per_s'] / 1e9:.1f} GFLOP/s, "
        f"matmul {peaks['matmul_peak_flops_per_s'] / 1e9:.1f} GFLOP/s.", ""
    ]
  head = ("| estimator | remat | K | M | step s | tasks/s | compile s | peak MiB | GFLOP | "
          "GFLOP/s | % conv peak |")
  if ref:
    head += " PyTorch eager s | speed-up |"
  lines += [head, "|" + "|".join(["---"] * (head.count("|") - 1)) + "|"]
  for r in jax_recs:
    row = (f"| {r['estimator']} | {r['remat']} | {r['inner_steps']} | "
           f"{r['meta_batch']} | {r['step_time_s']:.3f} | {r['tasks_per_s']:.2f} | "
           f"{r['compile_time_s']:.1f} | {fmt_bytes(r['peak_memory_bytes'])} | "
           f"{r['flops'] / 1e9:.2f} | {r['flops_per_s'] / 1e9:.1f} | "
           f"{100 * r['flops_per_s'] / r['peak_flops_per_s']:.1f} |")
    if ref:
      t = ref.get((r["estimator"], r["inner_steps"], r["meta_batch"]))
      row += (f" {t['step_time_s']:.3f} | {t['step_time_s'] / r['step_time_s']:.2f}x |"
              if t else " | |")
    lines.append(row)
  for t in ref.values():
    fl = f", {t['flops'] / 1e9:.1f} GFLOP by torch's flop counter" if t.get("flops") else ""
    where = ("on "
             + t["device"] if t.get("device", "cpu") != "cpu" else f"{t['torch_threads']} threads")
    lines += [
        "", f"PyTorch eager reference ({t['torch_version']}, {where}), "
        f"{t['estimator']}: {t['step_time_s']:.3f} s/step{fl}."
    ]
  return "\n".join(lines) + "\n"


def _row(cells) -> str:
  """One Markdown table row of ``cells`` (each written with ``str``)."""
  return "| " + " | ".join(str(c) for c in cells) + " |"


def _mib(b) -> str:
  return "" if b is None else f"{b / 2 ** 20:,.0f}"


def compile_table(records: list) -> str:
  """Markdown: per configuration, GFLOP of one meta-step, XLA's memory analysis (MiB:
  arguments, outputs, temporaries, aliased, implied peak), compile s and one step's s."""
  lines = []
  if records:
    r0 = records[0]
    lines += [
        f"{r0['model']} {r0['image_size']}x{r0['image_width']}, ngf {r0['ngf']}, ndf "
        f"{r0['ndf']}, {r0['num_classes']} classes, {r0['shots']} shots + "
        f"{r0['queries']} queries per task, inner {r0['inner_optimizer']}, lambda_b "
        f"{r0['lambda_b']}, {r0['dtype']}; device {r0['device']} ({r0['platform']}).", ""
    ]
  lines += [
      "| estimator | remat | K | M | GFLOP | arguments MiB | outputs MiB | "
      "temporaries MiB | aliased MiB | peak MiB | compile s | one step s |",
      "|---|---|---|---|---|---|---|---|---|---|---|---|"
  ]
  for r in records:
    step = (f"{r['step_time_s']:.1f}"
            if r.get("step_time_s") is not None else f"not run: {r.get('step_skipped', '')}")
    memory = [
        _mib(r.get(f"xla_{k}_bytes")) for k in ("argument", "output", "temp", "alias", "peak")
    ]
    lines.append(
        _row([
            r["estimator"], r["remat"], r["inner_steps"], r["meta_batch"],
            f"{r['flops'] / 1e9:,.0f}", *memory, f"{r['compile_time_s']:.0f}", step
        ]))
  return "\n".join(lines) + "\n"


def fidelity_table(fid: dict) -> str:
  """Markdown: per estimator and network, cosine / relative error / norm ratio to
  second_order, mean ± std over tasks x seeds (min), and of the meta-batch mean over seeds."""
  lines = [
      f"Against second_order on the same weights ({fid['weights']}), tasks ({fid['data']} "
      f"data, {fid['num_seeds']} seeds x {fid['meta_batch']} tasks) and per-task keys; "
      f"K = {fid['inner_steps']}. Per task: mean ± std over tasks x seeds (min); "
      "meta-batch: the mean gradient of a seed's tasks, mean ± std over seeds.", "",
      "| estimator | net | cosine per task | cosine of meta-batch mean | rel. error per "
      "task | norm ratio |", "|---|---|---|---|---|---|"
  ]
  for r in fid["summary"]:
    lines.append(
        _row([
            r["estimator"], r["net"],
            f"{r['cosine_mean']:.3f} ± {r['cosine_std']:.3f} ({r['cosine_min']:.3f})",
            f"{r['batch_cosine_mean']:.3f} ± {r['batch_cosine_std']:.3f}",
            f"{r['rel_error_mean']:.3f} ± {r['rel_error_std']:.3f}",
            f"{r['norm_ratio_mean']:.3g} ± {r['norm_ratio_std']:.2g}"
        ]))
  return "\n".join(lines) + "\n"


def _run_cells(r: dict) -> str:
  """The first cells of an outcome row: setting, estimator, meta-steps, s/step."""
  return (f"| {r['setting']} | {r['estimator']} | {r['meta_steps']} | "
          f"{r['step_time_s']:.3f} | ")


def outcome_table(records: List[dict]) -> str:
  """Markdown: held-out query L1 after IS adaptation, start and end, per setting; with
  several seeds, one row per (setting, estimator) with the mean ± std over the seeds."""
  from bil_jax.bench import outcome  # pylint: disable=import-outside-toplevel
  rows = outcome.summarize(records)
  if any(r["seeds"] + r["failed"] > 1 for r in rows):
    return _outcome_seeds_table(rows)
  lines = [
      "| setting | estimator | meta-steps | s/step | meta-step time s | held-out L1 after "
      "IS, start -> end | before IS, end | run wall s |", "|---|---|---|---|---|---|---|---|"
  ]
  for r in records:
    if r.get("error"):
      lines.append(_run_cells(r) + f"| failed: {r['error']} | | |")
      continue
    lines.append(
        _run_cells(r) + f"{r['meta_time_s']:.1f} | "
        f"{r.get('heldout_l1_after_start', float('nan')):.4f} -> "
        f"**{r.get('heldout_l1_after_end', float('nan')):.4f}** | "
        f"{r.get('heldout_l1_before_end', float('nan')):.4f} | {r['process_wall_s']:.0f} |")
  return "\n".join(lines) + "\n"


def _outcome_seeds_table(rows: List[dict]) -> str:
  """Markdown of :func:`bil_jax.bench.outcome.summarize`'s rows."""
  lines = [
      "| setting | estimator | meta-steps | s/step | peak MiB | seeds | held-out L1 after "
      "IS, start -> end: mean ± std [min, max] | gain (start - end), mean ± std | "
      "run wall s, mean |", "|---|---|---|---|---|---|---|---|---|"
  ]
  for r in rows:
    mem = r.get("peak_memory_bytes")
    head = _run_cells(r) + (f"{mem / 2 ** 20:.0f} | " if mem else "| ")
    failed = f" ({r['failed']} failed)" if r["failed"] else ""
    if not r["seeds"]:
      lines.append(head + f"0{failed} | | | |")
      continue
    lines.append(head + f"{r['seeds']}{failed} | {r['start_mean']:.4f} -> "
                 f"**{r['end_mean']:.4f}** ± {r['end_std']:.4f} [{r['end_min']:.4f}, "
                 f"{r['end_max']:.4f}] | {r['gain_mean']:+.4f} ± {r['gain_std']:.4f} | "
                 f"{r['wall_mean_s']:.0f} |")
  return "\n".join(lines) + "\n"


def plot_cost(records: list, path: str) -> None:
  """Step time and peak memory against K, one line per estimator, remat mode and M."""
  plt = _plt()
  recs = [r for r in records if r.get("implementation", "jax") == "jax"]
  fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
  groups = {}
  for r in recs:
    groups.setdefault((r["estimator"], str(r["remat"]), r["meta_batch"]), []).append(r)
  for (est, remat, m), rs in sorted(groups.items()):
    rs = sorted(rs, key=lambda r: r["inner_steps"])
    ks = [r["inner_steps"] for r in rs]
    label = f"{est}, remat {remat}, M={m}"
    style = "--s" if remat in ("none", "False") else "-o"
    a1.plot(ks, [r["step_time_s"] for r in rs], style, label=label)
    a2.plot(ks, [r["peak_memory_bytes"] / 2 ** 20 for r in rs], style, label=label)
  ticks = sorted({r["inner_steps"] for r in recs})
  for a in (a1, a2):
    a.set_xticks(ticks)
  a1.set(xlabel="inner steps K", ylabel="step time (s)", title="meta-step time")
  a2.set(xlabel="inner steps K", ylabel="peak memory (MiB)", title="peak memory")
  a1.legend(fontsize=7)
  for a in (a1, a2):
    a.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def plot_fidelity(fid: dict, path: str) -> None:
  """Per-task cosine to second_order (points: tasks x seeds; bar: mean ± std), G and D."""
  plt = _plt()
  ests = []
  for s in fid["samples"]:
    if s["estimator"] not in ests:
      ests.append(s["estimator"])
  fig, axes = plt.subplots(1, 2, figsize=(max(6, 1.6 * len(ests) + 3), 4), sharey=True)
  for ax, net in zip(axes, ("G", "D")):
    for i, est in enumerate(ests):
      v = [
          s["cosine"]
          for s in fid["samples"]
          if s["estimator"] == est and s["net"] == net and s["task"] != "mean"
      ]
      ax.plot([i] * len(v), v, "o", alpha=0.4, color="C0")
      mean = sum(v) / len(v)
      sd = (sum((x - mean) ** 2 for x in v) / len(v)) ** 0.5
      ax.errorbar([i + 0.15], [mean], yerr=[sd], fmt="s", color="C3", capsize=4)
    ax.set_xticks(range(len(ests)))
    ax.set_xticklabels(ests, rotation=20, fontsize=8)
    ax.axhline(1.0, color="k", lw=0.5)
    ax.set(title=f"{net}: cosine to second_order", ylim=(-1.05, 1.05))
    ax.grid(alpha=0.3)
  axes[0].set_ylabel("cosine similarity (per task)")
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def pareto_front(points: List[tuple]) -> List[int]:
  """Indices of the (cost, loss) points no other point beats in both (ties kept)."""
  keep = []
  for i, (c, l) in enumerate(points):
    if not any((c2 <= c and l2 <= l) and (c2 < c or l2 < l)
               for j, (c2, l2) in enumerate(points)
               if j != i):
      keep.append(i)
  return keep


def plot_outcome(records: List[dict], memory: dict, path: str) -> None:
  """Held-out L1 after IS adaptation (mean ± std over seeds) against s/step and against
  peak memory (MiB), for the equal-time and equal-steps runs; the equal-time Pareto front
  (of the means) as a line.

  ``memory``: estimator label -> peak bytes at the config's K/M/remat (or None).
  """
  from bil_jax.bench import outcome  # pylint: disable=import-outside-toplevel
  plt = _plt()
  rows = outcome.summarize(records)  # mean ± std over seeds (std 0 for one seed)
  fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
  for ax, xkey, xlabel in ((axes[0], "time", "time per meta-step (s)"), (axes[1], "memory",
                                                                         "peak memory (MiB)")):
    for setting, marker in (("same_time", "o"), ("same_steps", "^")):
      rs = [r for r in rows if r["setting"] == setting and r["seeds"]]
      xs = [
          r["step_time_s"] if xkey == "time" else (memory.get(r["estimator"]) or 0) / 2 ** 20
          for r in rs
      ]
      ys = [r["end_mean"] for r in rs]
      ax.errorbar(xs, ys, yerr=[r["end_std"] for r in rs], fmt=marker, capsize=3,
                  label=setting.replace("_", " "))
      for x, y, r in zip(xs, ys, rs):
        ax.annotate(r["estimator"], (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
      if setting == "same_time" and rs:
        front = sorted((xs[i], ys[i]) for i in pareto_front(list(zip(xs, ys))))
        ax.step([p[0] for p in front], [p[1] for p in front], "--", where="post", color="gray",
                label="Pareto front (same time)")
        ax.scatter([p[0] for p in front], [p[1] for p in front], s=160, facecolors="none",
                   edgecolors="gray")
    start = [r["start_mean"] for r in rows if r["seeds"]]
    if start:
      ax.axhline(sum(start) / len(start), color="k", lw=0.5, label="pre-trained (start)")
    ax.set(xlabel=xlabel, title=f"held-out L1 after IS adaptation vs {xkey}")
    ax.grid(alpha=0.3)
  axes[0].set_ylabel("held-out query L1 (lower is better)")
  axes[0].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def report(records: list, peaks: dict, fid: Optional[dict], outcome: Optional[List[dict]],
           title: str = "", notes: Optional[List[str]] = None) -> str:
  """The whole bench.md: notes, cost, fidelity and outcome sections."""
  parts = [f"# {title or 'bil_jax.bench'}", ""]
  if notes:
    parts += [f"* {n}" for n in notes] + [""]
  compiled = [r for r in records if "step_skipped" in r]
  if compiled:
    parts += ["## Compiled (--compile_only)", "", compile_table(compiled)]
  timed = [r for r in records if "step_skipped" not in r]
  if timed or not compiled:
    parts += ["## Cost", "", cost_table(timed, peaks)]
  if fid:
    parts += ["## Gradient fidelity", "", fidelity_table(fid)]
  if outcome:
    parts += ["## Outcome", "", outcome_table(outcome)]
  return "\n".join(parts)
