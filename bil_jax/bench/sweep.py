r"""The benchmark's sweep: cost, fidelity and outcome for one config and its options.

:func:`run` takes a config (read as ``bil_jax.main`` reads it) and
:class:`bil_jax.bench.options.SweepOptions`, and writes OUT/bench.{json,md,png}:

1. **Cost** (always, :mod:`bil_jax.bench.cost`): each (estimator, remat, K, M) in a fresh
   process: compile time, step time, peak memory, FLOPs, FLOP/s, share of the conv peak.
   With ``compile_only``: FLOPs and XLA's memory analysis, one step where it is short.
2. **Fidelity** (:mod:`bil_jax.bench.fidelity`): each estimator's per-task meta-gradient
   against second_order's, G and D apart.
3. **Outcome** (``outcome``, :mod:`bil_jax.bench.outcome`): pre-train once, meta-train
   each estimator for the same steps and the same time, compare held-out query L1.

With loss.lambda_b > 0 and no loss.vgg_weights, a random LPIPS-VGG is written to OUT and used.
Outputs: OUT/bench.json ({'cost', 'fidelity', 'outcome', 'peaks', 'notes', 'config'}),
OUT/bench.md, OUT/bench.png (cost against K), OUT/fidelity.png, OUT/outcome.png.
"""
import dataclasses
import json
import os
import subprocess
import sys
from typing import Callable, List, Optional

from bil_jax.bench import common, report, worker
from bil_jax.bench.common import EstimatorSpec
from bil_jax.bench.options import Sweep, SweepOptions

RECORD_KEYS = ("model", "estimator", "remat", "inner_steps", "meta_batch", "step_time_s",
               "compile_time_s", "peak_memory_bytes", "flops", "flops_per_s", "peak_flops_per_s")


def _ints(s, flag: str) -> List[int]:
  try:
    return [int(x) for x in str(s).split(",") if x.strip()]
  except ValueError:
    raise ValueError(f"--{flag}={s!r}: expected comma-separated integers") from None


def _remats(s) -> List[str]:
  from bil_jax import adapt  # pylint: disable=import-outside-toplevel
  table = {"on": "step", "off": "none", "true": "step", "false": "none"}
  out = []
  for x in (x.strip().lower() for x in str(s).split(",") if x.strip()):
    x = table.get(x, x)
    if x not in adapt.REMAT_MODES:
      raise ValueError(f"--remat={s!r}: {x!r} is not one of {list(adapt.REMAT_MODES)}")
    out.append(x)
  return out


def parse(config, opts: SweepOptions) -> Sweep:
  """The lists of the sweep options, defaulting to the config's own values (and the outcome
  options checked): one-line errors before any work."""
  if opts.outcome:
    from bil_jax.bench import outcome  # pylint: disable=import-outside-toplevel
    outcome.parse_settings(opts.outcome_settings)
    if opts.outcome_seeds < 1:
      raise ValueError(f"--outcome_seeds={opts.outcome_seeds}: must be >= 1")
    if opts.outcome_pretrained:
      outcome.check_pretrained(opts.outcome_pretrained)
  return Sweep(estimators=common.parse_estimators(opts.estimators),
               remat=_remats(opts.remat or config.meta.remat),
               inner_steps=_ints(opts.inner_steps or config.meta.inner_steps, "inner_steps"),
               meta_batch=_ints(opts.meta_batch or config.meta.meta_batch, "meta_batch"))


def cost_jobs(sweep: Sweep, kind: str = "cost") -> List[dict]:
  """One job per (M, estimator, remat, K); estimators that do not differentiate the unroll
  run with the first remat mode only (remat cannot change their step)."""
  jobs = []
  for m in sweep.meta_batch:
    for est in sweep.estimators:
      for remat in (sweep.remat if est.backprops_unroll else sweep.remat[:1]):
        for k in sweep.inner_steps:
          jobs.append({
              "kind": kind, "estimator": {"name": est.name, "options": est.options},
              "inner_steps": k, "meta_batch": m, "remat": remat
          })
  return jobs


def _describe(r: dict) -> str:
  """One log line of a cost or compile record."""
  head = (f"{r['estimator']:>14s} remat={r['remat']:<6s} K={r['inner_steps']:<2d} "
          f"M={r['meta_batch']}: ")
  step = ("no step timed" if r.get("step_time_s") is None else f"{r['step_time_s']:.3f} s/step")
  return (head + f"{step}, compile {r['compile_time_s']:.1f} s, "
          f"{report.fmt_bytes(r['peak_memory_bytes'])} MiB, {r['flops'] / 1e9:.2f} GFLOP")


_JOB_KEYS = ("kind", "estimator", "inner_steps", "meta_batch", "remat")


def run_cost(config, jobs: List[dict], opts: SweepOptions, peaks: dict, out_dir: str, setup=None,
             log: Callable = print, failures: Optional[List[str]] = None) -> List[dict]:
  """Runs the cost ``jobs``: in fresh processes (``opts.isolate``), or here (``setup``
  given: tests with tiny models); a failed job is logged, added to ``failures`` and left
  out. Each result, failed
  or not, is also appended to OUT/records.jsonl as it comes."""
  records = []
  for job in jobs:
    job = dict(job, config=common.config_to_json(config), peaks=peaks, repeats=opts.repeats,
               warmup=opts.warmup, flops=opts.flops, step_limit_s=opts.step_limit_s)
    est = EstimatorSpec(**job["estimator"])
    if setup is not None or not opts.isolate:
      r = worker.run_job(job, setup=setup)
    else:
      r = worker.run_in_process(job, out_dir, log, timeout_s=opts.job_timeout_s or None)
    with open(os.path.join(out_dir, "records.jsonl"), "a") as f:  # survives a stopped run
      f.write(json.dumps(dict(r, job={k: job[k] for k in _JOB_KEYS})) + "\n")
    if "error" in r:
      msg = (f"{est.label} remat={job['remat']} K={job['inner_steps']} "
             f"M={job['meta_batch']}: {r['error']}")
      log(msg)
      if failures is not None:
        failures.append(msg)
      continue
    records.append(r)
    log(_describe(r))
  return records


def torch_reference(sizes: dict, estimator: str, steps: int, meta_batch: int, out_dir: str) -> dict:
  """Times :mod:`bil_jax.bench.torch_ref` for one estimator in a fresh process; its record.

  ``sizes`` has size, ngf, ndf, num_classes, shots, queries and repeats, and ``device``
  ('cuda' where JAX's backend is a GPU, else 'cpu'). A fresh process per estimator, so
  that one estimator's allocator state does not slow the next.
  """
  path = os.path.join(out_dir, f"torch_{estimator}_k{steps}_m{meta_batch}.json")
  cmd = [
      sys.executable, "-m", "bil_jax.bench.torch_ref", f"--json={path}",
      f"--device={sizes.get('device', 'cpu')}", f"--meta_batch={meta_batch}",
      f"--inner_steps={steps}", f"--estimators={estimator}"
  ]
  cmd += [
      f"--{k}={sizes[k]}" for k in ("size", "ngf", "ndf", "num_classes", "shots", "queries",
                                    "repeats")
  ]
  proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                        check=False)
  if proc.returncode:
    tail = " | ".join(proc.stderr.strip().splitlines()[-2:])
    raise RuntimeError(f"bil_jax.bench.torch_ref exit status {proc.returncode}: {tail}")
  with open(path) as f:
    (record,) = json.load(f)
  os.remove(path)
  return record


def run_torch(config, sweep: Sweep, opts: SweepOptions, out_dir: str,
              log: Callable = print) -> List[dict]:
  """The eager PyTorch reference (pix2pix only) for second_order and first_order, on the
  GPU where JAX's backend is one (else the CPU)."""
  import importlib.util  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  if importlib.util.find_spec("torch") is None:
    log("--torch: PyTorch is not installed (pip install torch); skipping the reference")
    return []
  if config.model.name != "pix2pix":
    log(f"--torch: the PyTorch reference is pix2pix only (model.name={config.model.name!r})")
    return []
  sizes = dict(size=config.data.image_height, ngf=config.model.ngf, ndf=config.model.ndf,
               num_classes=config.data.num_classes, shots=config.data.shots,
               queries=config.data.queries, repeats=opts.repeats,
               device="cuda" if jax.default_backend() == "gpu" else "cpu")
  records = []
  for k in sweep.inner_steps:
    for m in sweep.meta_batch:
      for est in (e.name
                  for e in sweep.estimators
                  if e.name in ("second_order", "first_order") and not e.options):
        r = torch_reference(sizes, est, k, m, out_dir)
        log(f"pytorch eager ({sizes['device']}) {est:>12s} K={k} M={m}: "
            f"{r['step_time_s']:.3f} s/step")
        records.append(r)
  return records


def _at_config(records: List[dict], label: str, config) -> Optional[dict]:
  """The cost record of ``label`` at the config's own K and M (and its remat if timed)."""
  k, m = int(config.meta.inner_steps), int(config.meta.meta_batch)
  rs = [
      r for r in records if r["estimator"] == label and r["inner_steps"] == k and
      r["meta_batch"] == m and r.get("implementation", "jax") == "jax"
  ]
  same = [r for r in rs if r["remat"] == config.meta.remat]
  return (same or rs or [None])[0]


def run(config, opts: SweepOptions, out_dir: str, log: Callable = print, setup=None) -> dict:
  """Cost, fidelity and outcome for ``config`` and the sweep ``opts``; writes
  OUT/bench.{json,md,png} (and fidelity.png, outcome.png); returns bench.json's dict.

  ``setup`` (a :class:`bil_jax.bench.cost.Setup` with a custom model) runs the cost in this
  process; fidelity then uses ``setup.spec`` with random tasks, and outcome is not run.
  """
  from bil_jax.bench import cost  # pylint: disable=import-outside-toplevel
  os.makedirs(out_dir, exist_ok=True)
  sweep = parse(config, opts)
  notes = []
  msg = common.ensure_perceptual_weights(config, out_dir, config.seed)
  if msg:
    log(msg)
    notes.append(msg)
  peaks = cost.measure_peaks(opts.peak_size)
  log(f"peaks: conv {peaks['conv_peak_flops_per_s'] / 1e9:.1f} GFLOP/s, matmul "
      f"{peaks['matmul_peak_flops_per_s'] / 1e9:.1f} GFLOP/s")
  kind = "compile" if opts.compile_only else "cost"
  failures = []
  records = run_cost(config, cost_jobs(sweep, kind), opts, peaks, out_dir, setup, log, failures)
  notes += [f"not measured: {f}" for f in failures]
  if opts.torch and not opts.compile_only:
    records += run_torch(config, sweep, opts, out_dir, log)

  pretrained = None
  if opts.outcome and setup is None and not opts.compile_only:
    from bil_jax.bench import outcome  # pylint: disable=import-outside-toplevel
    pretrained = (outcome.check_pretrained(opts.outcome_pretrained)
                  if opts.outcome_pretrained else outcome.pretrain(config, out_dir, log))

  fid = None
  do_fid = opts.fidelity if opts.fidelity is not None else (not opts.compile_only and any(
      e.name != "second_order" or e.options for e in sweep.estimators))
  if do_fid:
    fid = _fidelity(config, sweep, opts, out_dir, pretrained, setup, log)

  outcome_records = None
  if pretrained:
    outcome_records = _outcome(config, sweep, opts, records, peaks, pretrained, out_dir, log)

  result = {
      "cost": records, "fidelity": fid, "outcome": outcome_records, "peaks": peaks, "notes": notes,
      "config": json.loads(common.config_to_json(config))
  }
  _write(result, opts, out_dir, log)
  return result


def _fidelity(config, sweep: Sweep, opts: SweepOptions, out_dir, pretrained, setup,
              log) -> Optional[dict]:
  m = int(opts.fidelity_tasks or config.meta.meta_batch)
  log(f"fidelity: {len(sweep.estimators)} estimators against second_order, "
      f"{opts.fidelity_seeds} seeds x {m} tasks")
  if setup is not None:
    from bil_jax.bench import fidelity  # pylint: disable=import-outside-toplevel
    fid = fidelity.run_fidelity(config, sweep.estimators, out_dir, opts.fidelity_seeds, m,
                                params=setup.params, source="random", spec=setup.spec, log=log)
  else:
    job = {
        "kind": "fidelity", "config": common.config_to_json(config),
        "estimators": [{"name": e.name, "options": e.options} for e in sweep.estimators],
        "workdir": pretrained or os.path.join(out_dir, "data"), "num_seeds": opts.fidelity_seeds,
        "meta_batch": m, "data": opts.fidelity_data, "params_from": pretrained or ""
    }
    fid = worker.run_in_process(job, out_dir, log)
  if "error" in fid:
    log(f"fidelity: {fid['error']}")
    return None
  return fid


def _outcome(config, sweep: Sweep, opts: SweepOptions, records, peaks, pretrained, out_dir,
             log) -> List[dict]:
  from bil_jax.bench import outcome  # pylint: disable=import-outside-toplevel
  times, memory = {}, {}
  for est in sweep.estimators:
    r = _at_config(records, est.label, config)
    if r is None:  # the sweep did not time the config's own K and M: time it now
      job = {
          "kind": "cost", "estimator": {"name": est.name, "options": est.options},
          "inner_steps": int(config.meta.inner_steps), "meta_batch": int(config.meta.meta_batch),
          "remat": config.meta.remat
      }
      got = run_cost(config, [job], dataclasses.replace(opts, flops=False), peaks, out_dir, None,
                     log)
      r = got[0] if got else None
    if r is not None:
      times[est.label], memory[est.label] = r["step_time_s"], r["peak_memory_bytes"]
  specs = [e for e in sweep.estimators if e.label in times]
  rs = outcome.run_outcome(config, specs, times, opts.outcome_steps, opts.outcome_budget_s,
                           pretrained, out_dir, log, seeds=opts.outcome_seeds,
                           settings=outcome.parse_settings(opts.outcome_settings))
  for r in rs:
    r["peak_memory_bytes"] = memory.get(r["estimator"])
  return rs


def _timed(records: List[dict]) -> List[dict]:
  """The records with a step time (not --compile_only's)."""
  return [r for r in records if "step_skipped" not in r]


def output_paths(result: dict, out_dir: str) -> List[str]:
  """The files :func:`run` wrote for ``result``."""
  names = ["bench.json", "bench.md"]
  names += ["bench.png"] if _timed(result["cost"]) else []
  names += ["fidelity.png"] if result["fidelity"] else []
  names += ["outcome.png"] if result["outcome"] else []
  return [os.path.join(out_dir, n) for n in names]


def _write(result: dict, opts: SweepOptions, out_dir: str, log: Callable) -> None:
  from bil_jax import io_utils  # pylint: disable=import-outside-toplevel
  io_utils.write_json(os.path.join(out_dir, "bench.json"), result)
  md = report.report(result["cost"], result["peaks"], result["fidelity"], result["outcome"],
                     opts.title, result["notes"])
  io_utils.write_atomic(os.path.join(out_dir, "bench.md"), md)
  if _timed(result["cost"]):
    report.plot_cost(_timed(result["cost"]), os.path.join(out_dir, "bench.png"))
  if result["fidelity"]:
    report.plot_fidelity(result["fidelity"], os.path.join(out_dir, "fidelity.png"))
  if result["outcome"]:
    memory = {r["estimator"]: r.get("peak_memory_bytes") for r in result["outcome"]}
    report.plot_outcome(result["outcome"], memory, os.path.join(out_dir, "outcome.png"))
  log(md)
