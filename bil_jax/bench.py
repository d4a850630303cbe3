r"""Meta-gradient estimator benchmark on any experiment config: cost, fidelity, outcome.

  python -m bil_jax.bench --config=configs/synthetic.py --out=/tmp/bench
  python -m bil_jax.bench --config=configs/faces.py:pg2,smoke --out=/tmp/bench_ff
  python -m bil_jax.bench --config=configs/synthetic.py --config.model.ngf=8 \
      --estimators=second_order,first_order,reptile,truncated:backprop_steps=1 \
      --remat=none,step,nested --inner_steps=1,5,10 --meta_batch=1,5 --out=/tmp/sweep
  python -m bil_jax.bench --config=configs/synthetic.py \
      --estimators=second_order,first_order,reptile --outcome --outcome_steps=10 \
      --config.pretrain.steps=100 --out=/tmp/outcome
  python -m bil_jax.bench --preset=torch_ref_32 --torch --out=/tmp/bench32
  python -m bil_jax.bench --quick --out=/tmp/quick

The config is read exactly as ``bil_jax.main`` reads it (``--config=FILE[:arg]``, locked,
``--config.a.b=v`` overrides; a bad key is a one-line error). The sweep flags take
comma-separated lists and default to the config's own value: ``--estimators`` (with
per-estimator options, ``es:pairs=16,sigma=0.02,truncated:backprop_steps=2``),
``--remat`` (none|step|nested), ``--inner_steps`` (K), ``--meta_batch`` (M).

1. **Cost** (always, :mod:`bil_jax.bench_cost`): each (estimator, remat, K, M) in a fresh
   process: compile time, step time, peak memory, FLOPs, FLOP/s, share of the conv peak.
2. **Fidelity** (``--fidelity``, :mod:`bil_jax.bench_fidelity`): each estimator's per-task
   meta-gradient against second_order's, G and D apart.
3. **Outcome** (``--outcome``, :mod:`bil_jax.bench_outcome`): pre-train once, meta-train
   each estimator for the same steps and the same time, compare held-out query L1.

With loss.lambda_b > 0 and no loss.vgg_weights, a random LPIPS-VGG is written to OUT and used.
Outputs: OUT/bench.json ({'cost', 'fidelity', 'outcome', 'peaks', 'notes', 'config'}),
OUT/bench.md, OUT/bench.png (cost against K), OUT/fidelity.png, OUT/outcome.png.
"""
import json
import os
import platform
import subprocess
import sys
import tempfile
from typing import Callable, List, Optional

from bil_jax import bench_common, bench_report, cli
from bil_jax.bench_common import EstimatorSpec
from bil_jax.bench_presets import PRESETS, apply_preset

RECORD_KEYS = ("model", "estimator", "remat", "inner_steps", "meta_batch", "step_time_s",
               "compile_time_s", "peak_memory_bytes", "flops", "flops_per_s",
               "peak_flops_per_s")

SWEEP_DEFAULTS = dict(estimators="second_order,first_order,reptile", remat="", inner_steps="",
                      meta_batch="", repeats=5, warmup=1, torch=False, peak_size="large",
                      isolate=True, fidelity=None, fidelity_seeds=2, fidelity_tasks=0,
                      fidelity_data="config", outcome=False, outcome_steps=10,
                      outcome_budget_s=0.0, outcome_seeds=1,
                      outcome_settings="same_steps,same_time", outcome_pretrained="",
                      title="", flops=True)


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


def sweep(config, o: dict) -> dict:
  """The lists of the sweep flags, defaulting to the config's own values (and the outcome
  flags checked: one-line errors before any work)."""
  if o.get("outcome"):
    from bil_jax import bench_outcome  # pylint: disable=import-outside-toplevel
    bench_outcome.parse_settings(o.get("outcome_settings", "same_steps"))
    if int(o.get("outcome_seeds", 1)) < 1:
      raise ValueError(f"--outcome_seeds={o['outcome_seeds']}: must be >= 1")
    if o.get("outcome_pretrained"):
      bench_outcome.check_pretrained(o["outcome_pretrained"])
  return {"estimators": bench_common.parse_estimators(o["estimators"]),
          "remat": _remats(o["remat"] or config.meta.remat),
          "inner_steps": _ints(o["inner_steps"] or config.meta.inner_steps, "inner_steps"),
          "meta_batch": _ints(o["meta_batch"] or config.meta.meta_batch, "meta_batch")}


def run_worker(job: dict, out_dir: str, log: Callable = print) -> dict:
  """Runs ``job`` with ``python -m bil_jax.bench_worker`` in a fresh process; its result."""
  with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
    jpath, rpath = os.path.join(tmp, "job.json"), os.path.join(tmp, "result.json")
    with open(jpath, "w") as f:
      json.dump(job, f)
    proc = subprocess.run([sys.executable, "-m", "bil_jax.bench_worker", jpath, rpath],
                          capture_output=True, text=True, check=False)
    for line in proc.stdout.splitlines():
      log(line)
    if proc.returncode or not os.path.isfile(rpath):
      tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
      return {"error": f"worker exit status {proc.returncode}: {tail}"}
    with open(rpath) as f:
      return json.load(f)


def cost_jobs(config, s: dict) -> List[dict]:
  """One job per (M, estimator, remat, K); estimators that do not differentiate the unroll
  run with the first remat mode only (remat cannot change their step)."""
  jobs = []
  for m in s["meta_batch"]:
    for est in s["estimators"]:
      for remat in (s["remat"] if est.backprops_unroll else s["remat"][:1]):
        for k in s["inner_steps"]:
          jobs.append({"kind": "cost", "estimator": {"name": est.name, "options": est.options},
                       "inner_steps": k, "meta_batch": m, "remat": remat})
  return jobs


def run_cost(config, jobs: List[dict], o: dict, peaks: dict, out_dir: str, setup=None,
             log: Callable = print) -> List[dict]:
  """Runs the cost ``jobs``: in fresh processes (``o['isolate']``), or here (``setup``
  given: tests with tiny models)."""
  from bil_jax import bench_cost  # pylint: disable=import-outside-toplevel
  records = []
  for job in jobs:
    job = dict(job, config=bench_common.config_to_json(config), peaks=peaks,
               repeats=o["repeats"], warmup=o["warmup"], flops=o["flops"])
    est = EstimatorSpec(**job["estimator"])
    if setup is not None or not o["isolate"]:
      su = setup or bench_cost.make_setup(config, est.name)
      r = bench_cost.bench_one(su, est, job["inner_steps"], job["meta_batch"], job["remat"],
                               peaks, o["repeats"], o["warmup"], flops=o["flops"])
    else:
      r = run_worker(job, out_dir, log)
    if "error" in r:
      log(f"{est.label} remat={job['remat']} K={job['inner_steps']} M={job['meta_batch']}: "
          f"{r['error']}")
      continue
    records.append(r)
    log(f"{r['estimator']:>14s} remat={r['remat']:<6s} K={r['inner_steps']:<2d} "
        f"M={r['meta_batch']}: {r['step_time_s']:.3f} s/step, compile "
        f"{r['compile_time_s']:.1f} s, {bench_report._fmt_bytes(r['peak_memory_bytes'])} MiB, "
        f"{r['flops'] / 1e9:.2f} GFLOP")
  return records


def torch_reference(o: dict, estimator: str, steps: int, meta_batch: int, out_dir: str) -> dict:
  """Times :mod:`bil_jax.bench_torch` for one estimator in a fresh process; its record.

  ``o`` has size, ngf, ndf, num_classes, shots, queries and repeats, and ``device`` ('cuda'
  where JAX's backend is a GPU, else 'cpu'). A fresh process per
  estimator: PyTorch's first-order step measured after a second-order one in the same
  process ran up to 2x slower on the 2-core CPU (allocator state).
  """
  path = os.path.join(out_dir, f"torch_{estimator}_k{steps}_m{meta_batch}.json")
  cmd = [sys.executable, "-m", "bil_jax.bench_torch", "--size", str(o["size"]),
         "--ngf", str(o["ngf"]), "--ndf", str(o["ndf"]), "--num_classes", str(o["num_classes"]),
         "--meta_batch", str(meta_batch), "--shots", str(o["shots"]), "--queries",
         str(o["queries"]), "--inner_steps", str(steps), "--estimators", estimator,
         "--repeats", str(o["repeats"]), "--json", path, "--device", o.get("device", "cpu")]
  subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
  with open(path) as f:
    (record,) = json.load(f)
  os.remove(path)
  return record


def run_torch(config, s: dict, o: dict, out_dir: str, log: Callable = print) -> List[dict]:
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
  t = dict(size=config.data.image_height, ngf=config.model.ngf, ndf=config.model.ndf,
           num_classes=config.data.num_classes, shots=config.data.shots,
           queries=config.data.queries, repeats=o["repeats"],
           device="cuda" if jax.default_backend() == "gpu" else "cpu")
  records = []
  for k in s["inner_steps"]:
    for m in s["meta_batch"]:
      for est in (e.name for e in s["estimators"] if e.name in ("second_order", "first_order")
                  and not e.options):
        r = torch_reference(t, est, k, m, out_dir)
        log(f"pytorch eager ({t['device']}) {est:>12s} K={k} M={m}: "
            f"{r['step_time_s']:.3f} s/step")
        records.append(r)
  return records


def _at_config(records: List[dict], label: str, config) -> Optional[dict]:
  """The cost record of ``label`` at the config's own K and M (and its remat if timed)."""
  k, m = int(config.meta.inner_steps), int(config.meta.meta_batch)
  rs = [r for r in records if r["estimator"] == label and r["inner_steps"] == k
        and r["meta_batch"] == m and r.get("implementation", "jax") == "jax"]
  same = [r for r in rs if r["remat"] == config.meta.remat]
  return (same or rs or [None])[0]


def run(config, opts: dict, out_dir: str, log: Callable = print, setup=None) -> dict:
  """Cost, fidelity and outcome for ``config`` and the sweep ``opts`` (SWEEP_DEFAULTS);
  writes OUT/bench.{json,md,png} (and fidelity.png, outcome.png); returns bench.json's dict.

  ``setup`` (a :class:`bil_jax.bench_cost.Setup` with a custom model) runs the cost in this
  process; fidelity then uses ``setup.spec`` with random tasks, and outcome is not run.
  """
  from bil_jax import bench_cost  # pylint: disable=import-outside-toplevel
  o = dict(SWEEP_DEFAULTS, **{k: v for k, v in opts.items() if v is not None})
  os.makedirs(out_dir, exist_ok=True)
  s = sweep(config, o)
  notes = []
  msg = bench_common.ensure_perceptual_weights(config, out_dir, config.seed)
  if msg:
    log(msg)
    notes.append(msg)
  peaks = bench_cost.measure_peaks(o["peak_size"])
  log(f"peaks: conv {peaks['conv_peak_flops_per_s'] / 1e9:.1f} GFLOP/s, matmul "
      f"{peaks['matmul_peak_flops_per_s'] / 1e9:.1f} GFLOP/s")
  records = run_cost(config, cost_jobs(config, s), o, peaks, out_dir, setup, log)
  if o["torch"]:
    records += run_torch(config, s, o, out_dir, log)

  pretrained = None
  if o["outcome"] and setup is None:
    from bil_jax import bench_outcome  # pylint: disable=import-outside-toplevel
    pretrained = (bench_outcome.check_pretrained(o["outcome_pretrained"])
                  if o["outcome_pretrained"] else bench_outcome.pretrain(config, out_dir, log))

  fid = None
  do_fid = o["fidelity"] if o["fidelity"] is not None else any(
      e.name != "second_order" or e.options for e in s["estimators"])
  if do_fid:
    fid = _fidelity(config, s, o, out_dir, pretrained, setup, log)

  outcome = None
  if pretrained:
    outcome = _outcome(config, s, o, records, peaks, pretrained, out_dir, log)

  result = {"cost": records, "fidelity": fid, "outcome": outcome, "peaks": peaks,
            "notes": notes, "config": json.loads(bench_common.config_to_json(config))}
  _write(result, o, out_dir, log)
  return result


def _fidelity(config, s, o, out_dir, pretrained, setup, log) -> Optional[dict]:
  m = int(o["fidelity_tasks"] or config.meta.meta_batch)
  log(f"fidelity: {len(s['estimators'])} estimators against second_order, "
      f"{o['fidelity_seeds']} seeds x {m} tasks")
  if setup is not None:
    from bil_jax import bench_fidelity  # pylint: disable=import-outside-toplevel
    fid = bench_fidelity.run_fidelity(config, s["estimators"], out_dir, o["fidelity_seeds"], m,
                                      params=setup.params, source="random", spec=setup.spec,
                                      log=log)
  else:
    job = {"kind": "fidelity", "config": bench_common.config_to_json(config),
           "estimators": [{"name": e.name, "options": e.options} for e in s["estimators"]],
           "workdir": pretrained or os.path.join(out_dir, "data"),
           "num_seeds": o["fidelity_seeds"], "meta_batch": m, "data": o["fidelity_data"],
           "params_from": pretrained or ""}
    fid = run_worker(job, out_dir, log)
  if "error" in fid:
    log(f"fidelity: {fid['error']}")
    return None
  return fid


def _outcome(config, s, o, records, peaks, pretrained, out_dir, log) -> List[dict]:
  from bil_jax import bench_outcome  # pylint: disable=import-outside-toplevel
  times, memory = {}, {}
  for est in s["estimators"]:
    r = _at_config(records, est.label, config)
    if r is None:  # the sweep did not time the config's own K and M: time it now
      job = {"kind": "cost", "estimator": {"name": est.name, "options": est.options},
             "inner_steps": int(config.meta.inner_steps),
             "meta_batch": int(config.meta.meta_batch), "remat": config.meta.remat}
      got = run_cost(config, [job], dict(o, flops=False), peaks, out_dir, None, log)
      r = got[0] if got else None
    if r is not None:
      times[est.label], memory[est.label] = r["step_time_s"], r["peak_memory_bytes"]
  specs = [e for e in s["estimators"] if e.label in times]
  rs = bench_outcome.run_outcome(config, specs, times, int(o["outcome_steps"]),
                                 float(o["outcome_budget_s"]), pretrained, out_dir, log,
                                 seeds=int(o["outcome_seeds"]),
                                 settings=bench_outcome.parse_settings(o["outcome_settings"]))
  for r in rs:
    r["peak_memory_bytes"] = memory.get(r["estimator"])
  return rs


def _write(result: dict, o: dict, out_dir: str, log: Callable) -> None:
  from bil_jax import io_utils  # pylint: disable=import-outside-toplevel
  io_utils.write_json(os.path.join(out_dir, "bench.json"), result)
  md = bench_report.report(result["cost"], result["peaks"], result["fidelity"],
                           result["outcome"], o.get("title") or "", result["notes"])
  io_utils.write_atomic(os.path.join(out_dir, "bench.md"), md)
  if result["cost"]:
    bench_report.plot_cost(result["cost"], os.path.join(out_dir, "bench.png"))
  if result["fidelity"]:
    bench_report.plot_fidelity(result["fidelity"], os.path.join(out_dir, "fidelity.png"))
  if result["outcome"]:
    memory = {r["estimator"]: r.get("peak_memory_bytes") for r in result["outcome"]}
    bench_report.plot_outcome(result["outcome"], memory, os.path.join(out_dir, "outcome.png"))
  log(md)


# ---------------------------------------------------------------------------------------
# Command line: absl flags, the config read as bil_jax.main reads it.

_fail = cli.fail
_bad_override = cli.bad_override


def define_flags(argv) -> None:
  """Defines the benchmark's flags (at call time, so importing this module defines none)."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  from ml_collections import config_flags  # pylint: disable=import-outside-toplevel
  try:
    config_flags.DEFINE_config_file("config", "configs/synthetic.py", "Experiment config file.",
                                    lock_config=True)
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    _bad_override(e, argv)
  d = SWEEP_DEFAULTS
  flags.DEFINE_string("out", "bench_out", "Output folder OUT.")
  flags.DEFINE_enum("preset", None, sorted(PRESETS), "Config overrides and sweep of a preset.")
  flags.DEFINE_bool("quick", False, "Same as --preset=quick.")
  flags.DEFINE_string("estimators", None, "Comma-separated estimators with options, e.g. "
                      "second_order,truncated:backprop_steps=2,es:pairs=16,sigma=0.02 "
                      f"(default {d['estimators']}).")
  flags.DEFINE_string("remat", None, "none,step,nested (default: meta.remat).")
  flags.DEFINE_string("inner_steps", None, "K values, e.g. 1,5,10 (default: meta.inner_steps).")
  flags.DEFINE_string("meta_batch", None, "M values, e.g. 1,5 (default: meta.meta_batch).")
  flags.DEFINE_integer("repeats", None, f"Timed steps per configuration (median; {d['repeats']}).")
  flags.DEFINE_integer("warmup", None, "Untimed steps before timing (1).")
  flags.DEFINE_bool("torch", None, "Also time the eager PyTorch reference (pix2pix).")
  flags.DEFINE_enum("peak_size", None, ["large", "small"], "Size of the peak FLOP/s probes.")
  flags.DEFINE_bool("isolate", None, "Each configuration in a fresh process (default true).")
  flags.DEFINE_bool("flops", None, "Count FLOPs (two extra lowerings per configuration).")
  flags.DEFINE_bool("fidelity", None, "Gradient fidelity against second_order (default: on "
                    "unless second_order is the only estimator).")
  flags.DEFINE_integer("fidelity_seeds", None, "Seeds (meta-batches) for fidelity (2).")
  flags.DEFINE_integer("fidelity_tasks", None, "Tasks per seed (default: meta.meta_batch).")
  flags.DEFINE_enum("fidelity_data", None, ["config", "random"],
                    "Fidelity episodes: the config's dataset or random images.")
  flags.DEFINE_bool("outcome", None, "Pre-train once, meta-train each estimator, compare "
                    "held-out L1 after IS adaptation.")
  flags.DEFINE_integer("outcome_steps", None, "Meta-steps of the equal-steps runs (10).")
  flags.DEFINE_float("outcome_budget_s", None, "Meta-step seconds of the equal-time runs "
                     "(0: outcome_steps x the slowest estimator's step).")
  flags.DEFINE_integer("outcome_seeds", None, "Seeds per outcome run: config.seed + i, "
                       "i < N; the table gives mean ± std (1).")
  flags.DEFINE_string("outcome_settings", None, "same_steps,same_time or one of them "
                      "(both).")
  flags.DEFINE_string("outcome_pretrained", None, "A workdir of --mode=pretrain to start "
                      "from instead of pre-training in OUT/outcome/pretrained.")
  flags.DEFINE_string("title", None, "Title of bench.md.")


_OPT_FLAGS = ("estimators", "remat", "inner_steps", "meta_batch", "repeats", "warmup", "torch",
              "peak_size", "isolate", "flops", "fidelity", "fidelity_seeds", "fidelity_tasks",
              "fidelity_data", "outcome", "outcome_steps", "outcome_budget_s", "outcome_seeds",
              "outcome_settings", "outcome_pretrained", "title")


def parse_flags(argv):
  """absl parsing with one-line errors for bad flags and config overrides."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  define_flags(argv)
  try:
    rest = flags.FLAGS(argv)
    flags.FLAGS.config.keys()
    return rest
  except flags.Error as e:
    _fail(e)
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    _bad_override(e, argv)
  except OSError as e:
    _fail(f"--config: {e}")


def options_from_flags(argv) -> tuple:
  """(config, opts, out) from the parsed flags; the preset applied (--config.* wins)."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  f = flags.FLAGS
  config = f.config
  opts = {k: getattr(f, k) for k in _OPT_FLAGS if getattr(f, k) is not None}
  preset = "quick" if f.quick else f.preset
  if preset:
    user = {a[len("--config."):].split("=", 1)[0] for a in argv if a.startswith("--config.")}
    opts = apply_preset(config, preset, opts, user)
  return config, opts, f.out


def _main(argv):
  # On a GPU this process only measures the peaks: without this, JAX's default
  # preallocation (75% of the GPU) here would starve the fresh process of each configuration
  # and the PyTorch reference. The workers inherit it; their peak is measured as
  # peak_bytes_in_use, which preallocation does not change.
  os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
  import jax  # pylint: disable=import-outside-toplevel
  if len(argv) > 1:
    _fail(f"unexpected arguments: {argv[1:]}")
  config, opts, out = options_from_flags(sys.argv)
  try:
    sweep(config, dict(SWEEP_DEFAULTS, **opts))  # flag errors before any work
  except (ValueError, FileNotFoundError) as e:
    _fail(e)
  print(f"bil_jax.bench on {jax.devices()[0].device_kind} ({jax.default_backend()}), "
        f"{os.cpu_count()} CPUs, jax {jax.__version__}, python {platform.python_version()}",
        flush=True)
  try:
    run(config, opts, out, log=lambda m: print(m, flush=True))
  except (ValueError, KeyError, FileNotFoundError, RuntimeError) as e:
    _fail(e)
  return 0


def main():
  """Console-script entry point (``bil-bench``)."""
  from absl import app  # pylint: disable=import-outside-toplevel
  app.run(_main, flags_parser=parse_flags)


if __name__ == "__main__":
  main()
