"""Meta-gradient benchmark: second-order vs first-order vs Reptile, remat, K and meta-batch.

For a model at a given resolution and width, times one compiled meta-training step
(:func:`bil_jax.meta.make_meta_step`, outer Adam included) for every combination of
estimator, remat, inner steps K and meta-batch M, after warm-up; compilation is timed
separately. Each record holds the median step time, tasks/s, compile time, peak memory,
the step's FLOPs from XLA's cost analysis and the achieved FLOP/s against a conv and a
matmul peak measured in the same run on the same device.

  python -m bil_jax.bench --quick --out /tmp/bench              # a few minutes on 2 cores
  python -m bil_jax.bench --preset torch_ref_32 --torch --out /tmp/bench32
  python -m bil_jax.bench --preset torch_ref_64 --torch --out /tmp/bench64
  python -m bil_jax.bench --model pg2 --size 64 --ngf 32 --estimators second_order \\
      --inner_steps 1,5,10,20 --meta_batch 1,5 --remat on,off --out /tmp/bench_pg2

Outputs OUT/bench.json (a list of records), OUT/bench.md (a table) and OUT/bench.png
(step time and peak memory against K, one line per estimator and remat setting).

Peak memory: the device's ``memory_stats()['peak_bytes_in_use']`` where the backend has
it (GPU, TPU; reset between configurations is not possible, so it is measured in the
order run), otherwise (CPU) XLA's compiled memory analysis of the step: arguments +
outputs + temporaries - aliased bytes, i.e. the buffers live at the step's peak; the
process's peak resident memory is recorded as well. FLOPs: XLA's cost analysis of the
step lowered with the inner loop unrolled (the cost analysis counts a loop body once),
at K = 1 and 2 and extrapolated linearly in K (exact: the step is affine in K).
"""
import argparse
import dataclasses
import importlib.util
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from bil_jax import builders, config_lib, estimators, meta, parallel
from bil_jax.models import layers

RECORD_KEYS = ("model", "estimator", "remat", "inner_steps", "meta_batch", "step_time_s",
               "compile_time_s", "peak_memory_bytes", "flops", "flops_per_s",
               "peak_flops_per_s")

PRESETS = {
    # The PyTorch reference configurations of issue 6 (bil_jax.bench_torch).
    "torch_ref_32": dict(model="pix2pix", size=32, ngf=16, ndf=16, num_classes=8, shots=5,
                         queries=5, inner_optimizer="sgd", inner_steps="5", meta_batch="5",
                         estimators="second_order,first_order", remat="off"),
    "torch_ref_64": dict(model="pix2pix", size=64, ngf=32, ndf=32, num_classes=8, shots=5,
                         queries=5, inner_optimizer="sgd", inner_steps="5", meta_batch="5",
                         estimators="second_order,first_order", remat="off"),
    # A few minutes on 2 CPU cores (compilation dominates): every estimator, remat on/off
    # where it matters (second order; the others do not differentiate the adaptation), K 1/5.
    "quick": dict(model="pix2pix", size=32, ngf=8, ndf=8, num_classes=8, shots=5, queries=5,
                  inner_optimizer="adam", inner_steps="1,5", meta_batch="1",
                  estimators="second_order,first_order,reptile", remat="on,off",
                  redundant_remat=False, repeats=3),
}

DEFAULTS = dict(model="pix2pix", size=32, ngf=16, ndf=16, num_classes=8, shots=5, queries=5,
                inner_optimizer="adam", inner_steps="1,5,10,20", meta_batch="1,5",
                estimators="second_order,first_order,reptile", remat="on,off",
                redundant_remat=True, repeats=5, d_layers=3, warmup=1, torch=False, peak_size="large")


# ---------------------------------------------------------------------------------------
# Peak FLOP/s of this device, measured with XLA.

def _median_time(fn, *args, repeats=5):
  jax.block_until_ready(fn(*args))
  ts = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    ts.append(time.perf_counter() - t0)
  return statistics.median(ts)


def measure_peaks(size: str = "large", repeats: int = 5) -> dict:
  """Matmul and conv FLOP/s of large float32 ops under jit (median of ``repeats``).

  ``size="small"`` uses small problems (for tests); the numbers are then not peaks.
  """
  n = 2048 if size == "large" else 128
  a = jnp.ones((n, n), jnp.float32)
  t_mm = _median_time(jax.jit(lambda x, y: x @ y), a, a, repeats=repeats)
  b, hw, c = (8, 64, 128) if size == "large" else (1, 8, 16)
  x = jnp.ones((b, hw, hw, c), jnp.float32)
  k = jnp.ones((3, 3, c, c), jnp.float32)
  conv = jax.jit(lambda x, k: jax.lax.conv_general_dilated(
      x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")))
  t_conv = _median_time(conv, x, k, repeats=repeats)
  return {"matmul_peak_flops_per_s": 2 * n ** 3 / t_mm,
          "conv_peak_flops_per_s": 2 * b * hw * hw * 9 * c * c / t_conv}


# ---------------------------------------------------------------------------------------
# The benchmarked configuration.

@dataclasses.dataclass
class Setup:
  config: Any
  spec: Any
  params: Any
  outer_opt: Any
  opt_state: Any
  mesh: Any
  frozen: Any = None
  model_name: str = ""


def make_config(model="pix2pix", size=32, ngf=16, ndf=16, num_classes=8, shots=5, queries=5,
                inner_optimizer="adam", d_layers=3):
  c = config_lib.base_config()
  c.model.name = model
  c.data.image_height = c.data.image_width = int(size)
  c.data.num_classes = int(num_classes)
  c.data.shots, c.data.queries = int(shots), int(queries)
  c.model.ngf, c.model.ndf = int(ngf), int(ndf)
  c.model.d_layers = int(d_layers)
  c.loss.lambda_b = 0.0          # no VGG16 weights here; the perceptual term is off
  if inner_optimizer != c.meta.inner_optimizer.name:  # any optax name; its defaults
    c.meta.inner_optimizer = {"name": inner_optimizer, "lr": c.meta.inner_optimizer.lr}
  return c


def make_setup(config, spec=None, params=None, model_name: str = "") -> Setup:
  """Parameters, outer optimizer and mesh for ``config`` (``spec``/``params`` override the
  model of ``config``, e.g. tiny test networks)."""
  if spec is None:
    spec = builders.build_spec(config, config.data.num_classes)
  if params is None:
    params = builders.init_params(spec, config.seed, builders.image_hw(config))
  outer = builders.outer_optimizer(config)
  mesh = parallel.make_mesh()
  params = parallel.replicate(mesh, params)
  return Setup(config, spec, params, outer, parallel.replicate(mesh, outer.init(params)), mesh,
               model_name=model_name or config.model.name)


def random_tasks(config, meta_batch: int, seed: int = 0) -> dict:
  """Random episodes {'support', 'query'} with a leading [M] axis (the data do not matter)."""
  rng = np.random.default_rng(seed)
  h, w = builders.image_hw(config)
  nc = config.data.num_classes

  def pairs(n):
    return {"map": rng.integers(0, nc, (meta_batch, n, h, w)).astype(np.int32),
            "image": rng.uniform(-1, 1, (meta_batch, n, h, w, 3)).astype(np.float32),
            "ref": rng.uniform(-1, 1, (meta_batch, n, h, w, 3)).astype(np.float32)}

  return {"support": pairs(config.data.shots), "query": pairs(config.data.queries)}


def _cost(obj) -> dict:
  ca = obj.cost_analysis()
  if isinstance(ca, (list, tuple)):
    ca = ca[0] if ca else {}
  return ca or {}


def _step_fn(setup: Setup, estimator: str, steps: int, remat: bool, unroll=1):
  loop = dataclasses.replace(builders.inner_loop(setup.config, setup.spec, steps),
                             remat=remat, unroll=unroll)
  return meta.make_meta_step(loop, estimator, setup.outer_opt, setup.mesh)


def step_flops(setup: Setup, estimator: str, steps: int, remat: bool, args) -> float:
  """XLA cost-analysis FLOPs of the step, with the inner loop unrolled at K=1, 2 and
  extrapolated linearly (see the module docstring)."""
  f = []
  for k in (1, 2):
    lowered = _step_fn(setup, estimator, k, remat, unroll=True).lower(*args)
    f.append(float(_cost(lowered).get("flops", 0.0)))
  return f[0] + (steps - 1) * (f[1] - f[0])


def _device_peak_bytes() -> Optional[int]:
  try:
    stats = jax.local_devices()[0].memory_stats()
  except Exception:  # pylint: disable=broad-except
    stats = None
  if stats and "peak_bytes_in_use" in stats:
    return int(stats["peak_bytes_in_use"])
  return None


def _rss_peak_bytes() -> int:
  r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return int(r) * (1 if sys.platform == "darwin" else 1024)


def bench_one(setup: Setup, estimator: str, steps: int, meta_batch: int, remat: bool,
              peaks: dict, repeats: int = 5, warmup: int = 1, seed: int = 0) -> dict:
  """Times one configuration; returns its record."""
  config = setup.config
  tasks = parallel.shard_tasks(setup.mesh, random_tasks(config, meta_batch, seed))
  rngs = meta.task_rngs(jax.random.PRNGKey(seed), 0, meta_batch)
  args = (setup.params, setup.opt_state, tasks, rngs, setup.frozen)
  step = _step_fn(setup, estimator, steps, remat)
  t0 = time.perf_counter()
  lowered = step.lower(*args)
  t1 = time.perf_counter()
  compiled = lowered.compile()
  t2 = time.perf_counter()
  out = None
  for _ in range(max(warmup, 1)):
    out = jax.block_until_ready(compiled(*args))
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    out = jax.block_until_ready(compiled(*args))
    times.append(time.perf_counter() - t)
  step_time = statistics.median(times)

  mem = compiled.memory_analysis()
  xla_bytes = None
  if mem is not None:
    xla_bytes = int(mem.argument_size_in_bytes + mem.output_size_in_bytes
                    + mem.temp_size_in_bytes - mem.alias_size_in_bytes)
  device_bytes = _device_peak_bytes()
  peak_bytes = device_bytes if device_bytes is not None else xla_bytes
  flops = step_flops(setup, estimator, steps, remat, args)
  metrics = jax.device_get(out[2])
  return {
      "model": setup.model_name, "estimator": estimator, "remat": bool(remat),
      "inner_steps": int(steps), "meta_batch": int(meta_batch),
      "step_time_s": step_time, "compile_time_s": t2 - t1, "lower_time_s": t1 - t0,
      "peak_memory_bytes": peak_bytes,
      "memory_source": "device" if device_bytes is not None else "xla_memory_analysis",
      "xla_temp_bytes": int(mem.temp_size_in_bytes) if mem is not None else None,
      "process_peak_rss_bytes": _rss_peak_bytes(),
      "flops": flops, "flops_per_s": flops / step_time,
      "peak_flops_per_s": peaks["conv_peak_flops_per_s"],
      "conv_utilization": flops / step_time / peaks["conv_peak_flops_per_s"],
      "matmul_peak_flops_per_s": peaks["matmul_peak_flops_per_s"],
      "tasks_per_s": meta_batch / step_time, "step_times_s": times,
      "loss": float(metrics["query_g_loss_after"]),
      "image_size": int(config.data.image_height), "ngf": int(config.model.ngf),
      "ndf": int(config.model.ndf), "num_classes": int(config.data.num_classes),
      "shots": int(config.data.shots), "queries": int(config.data.queries),
      "inner_optimizer": config.meta.inner_optimizer.name, "implementation": "jax",
      "device": jax.devices()[0].device_kind, "platform": jax.default_backend(),
      "conv_impl": layers.conv_impl(),
  }


# ---------------------------------------------------------------------------------------
# Output.

def _fmt_bytes(b):
  return "n/a" if b is None else f"{b / 2 ** 20:.1f}"


def markdown_table(records: list, peaks: dict, title: str = "") -> str:
  jax_recs = [r for r in records if r.get("implementation", "jax") == "jax"]
  ref = {(r["estimator"], r["inner_steps"], r["meta_batch"]): r for r in records
         if r.get("implementation") == "pytorch_eager"}
  lines = []
  if title:
    lines += [f"### {title}", ""]
  if jax_recs:
    r0 = jax_recs[0]
    lines += [f"{r0['model']} {r0['image_size']}x{r0['image_size']}, ngf {r0['ngf']}, ndf "
              f"{r0['ndf']}, {r0['num_classes']} classes, {r0['shots']} shots + "
              f"{r0['queries']} queries per task, inner {r0['inner_optimizer']}; device "
              f"{r0['device']} ({r0['platform']}); measured peaks: conv "
              f"{peaks['conv_peak_flops_per_s'] / 1e9:.1f} GFLOP/s, matmul "
              f"{peaks['matmul_peak_flops_per_s'] / 1e9:.1f} GFLOP/s.", ""]
  head = ("| estimator | remat | K | M | step s | tasks/s | compile s | peak MiB | GFLOP | "
          "GFLOP/s | % conv peak |")
  if ref:
    head += " PyTorch eager s | speed-up |"
  lines += [head, "|" + "|".join(["---"] * (head.count("|") - 1)) + "|"]
  for r in jax_recs:
    row = (f"| {r['estimator']} | {'on' if r['remat'] else 'off'} | {r['inner_steps']} | "
           f"{r['meta_batch']} | {r['step_time_s']:.3f} | {r['tasks_per_s']:.2f} | "
           f"{r['compile_time_s']:.1f} | {_fmt_bytes(r['peak_memory_bytes'])} | "
           f"{r['flops'] / 1e9:.2f} | {r['flops_per_s'] / 1e9:.1f} | "
           f"{100 * r['flops_per_s'] / r['peak_flops_per_s']:.1f} |")
    if ref:
      t = ref.get((r["estimator"], r["inner_steps"], r["meta_batch"]))
      row += (f" {t['step_time_s']:.3f} | {t['step_time_s'] / r['step_time_s']:.2f}x |"
              if t else " | |")
    lines.append(row)
  for t in ref.values():
    fl = f", {t['flops'] / 1e9:.1f} GFLOP by torch's flop counter" if t.get("flops") else ""
    lines.append("")
    lines.append(f"PyTorch eager reference ({t['torch_version']}, {t['torch_threads']} "
                 f"threads), {t['estimator']}: {t['step_time_s']:.3f} s/step{fl}.")
  return "\n".join(lines) + "\n"


def plot(records: list, path: str) -> None:
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  recs = [r for r in records if r.get("implementation", "jax") == "jax"]
  fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
  groups = {}
  for r in recs:
    groups.setdefault((r["estimator"], r["remat"], r["meta_batch"]), []).append(r)
  for (est, remat, m), rs in sorted(groups.items()):
    rs = sorted(rs, key=lambda r: r["inner_steps"])
    ks = [r["inner_steps"] for r in rs]
    label = f"{est}, remat {'on' if remat else 'off'}, M={m}"
    style = "-o" if remat else "--s"
    a1.plot(ks, [r["step_time_s"] for r in rs], style, label=label)
    a2.plot(ks, [r["peak_memory_bytes"] / 2 ** 20 for r in rs], style, label=label)
  a1.set(xlabel="inner steps K", ylabel="step time (s)", title="meta-step time")
  a2.set(xlabel="inner steps K", ylabel="peak memory (MiB)", title="peak memory")
  a1.legend(fontsize=7)
  for a in (a1, a2):
    a.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


# ---------------------------------------------------------------------------------------

def _ints(s):
  return [int(x) for x in str(s).split(",") if x]


def _remats(s):
  table = {"on": True, "off": False, "true": True, "false": False, "1": True, "0": False}
  return [table[x.strip().lower()] for x in str(s).split(",") if x]


def torch_reference(o: dict, estimator: str, steps: int, meta_batch: int, out_dir: str) -> dict:
  """Times :mod:`bil_jax.bench_torch` for one estimator in a fresh process; its record.

  A fresh process per estimator: PyTorch's first-order step measured after a second-order
  one in the same process ran up to 2x slower on the 2-core CPU (allocator state), which
  would flatter the JAX numbers.
  """
  path = os.path.join(out_dir, f"torch_{estimator}_k{steps}_m{meta_batch}.json")
  cmd = [sys.executable, "-m", "bil_jax.bench_torch", "--size", str(o["size"]),
         "--ngf", str(o["ngf"]), "--ndf", str(o["ndf"]), "--num_classes", str(o["num_classes"]),
         "--meta_batch", str(meta_batch), "--shots", str(o["shots"]), "--queries",
         str(o["queries"]), "--inner_steps", str(steps), "--estimators", estimator,
         "--repeats", str(o["repeats"]), "--json", path]
  subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
  with open(path) as f:
    (record,) = json.load(f)
  os.remove(path)
  return record


def run(opts: dict, out_dir: str, log=print, setup: Optional[Setup] = None) -> list:
  """Runs the grid of ``opts`` (see DEFAULTS), writes OUT/bench.{json,md,png}; returns records."""
  o = dict(DEFAULTS)
  o.update(opts)
  ests = [e for e in str(o["estimators"]).split(",") if e]
  for e in ests:
    estimators.get(e)
  if setup is None:
    config = make_config(o["model"], o["size"], o["ngf"], o["ndf"], o["num_classes"],
                         o["shots"], o["queries"], o["inner_optimizer"], o["d_layers"])
  os.makedirs(out_dir, exist_ok=True)
  peaks = measure_peaks(o["peak_size"])
  log(f"peaks: conv {peaks['conv_peak_flops_per_s'] / 1e9:.1f} GFLOP/s, matmul "
      f"{peaks['matmul_peak_flops_per_s'] / 1e9:.1f} GFLOP/s")
  if setup is None:
    setup = make_setup(config)
  records = []
  for m in _ints(o["meta_batch"]):
    for est in ests:
      remats = _remats(o["remat"])
      if not o["redundant_remat"] and est != "second_order":
        # remat only changes the backward pass through the adaptation, which only
        # second_order has: time the others once (remat off if asked for).
        remats = [False] if False in remats else remats[:1]
      for remat in remats:
        for k in _ints(o["inner_steps"]):
          r = bench_one(setup, est, k, m, remat, peaks, o["repeats"], o["warmup"])
          records.append(r)
          log(f"{est:>12s} remat={'on ' if remat else 'off'} K={k:<2d} M={m}: "
              f"{r['step_time_s']:.3f} s/step, compile {r['compile_time_s']:.1f} s, "
              f"{_fmt_bytes(r['peak_memory_bytes'])} MiB, {r['flops'] / 1e9:.2f} GFLOP, "
              f"{r['flops_per_s'] / 1e9:.1f} GFLOP/s")
  if o["torch"]:
    if importlib.util.find_spec("torch") is None:
      log("--torch: PyTorch is not installed (pip install torch); skipping the reference")
    else:
      for k in _ints(o["inner_steps"]):
        for m in _ints(o["meta_batch"]):
          for est in (e for e in ests if e != "reptile"):
            r = torch_reference(o, est, k, m, out_dir)
            log(f"pytorch eager {est:>12s} K={k} M={m}: {r['step_time_s']:.3f} s/step")
            records.append(r)
  with open(os.path.join(out_dir, "bench.json"), "w") as f:
    json.dump(records, f, indent=1)
  title = o.get("title") or ""
  with open(os.path.join(out_dir, "bench.md"), "w") as f:
    f.write(markdown_table(records, peaks, title))
  plot(records, os.path.join(out_dir, "bench.png"))
  log(markdown_table(records, peaks, title))
  return records


def parse_args(argv=None) -> tuple:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                               formatter_class=argparse.RawDescriptionHelpFormatter,
                               epilog=__doc__.split("\n\n", 1)[1])
  ap.add_argument("--out", default="bench_out", help="output folder OUT")
  ap.add_argument("--preset", choices=sorted(PRESETS), default=None)
  ap.add_argument("--quick", action="store_true", help="same as --preset quick")
  ap.add_argument("--model", choices=("pix2pix", "pg2"))
  ap.add_argument("--size", type=int, help="image height = width")
  ap.add_argument("--ngf", type=int)
  ap.add_argument("--ndf", type=int)
  ap.add_argument("--num_classes", type=int)
  ap.add_argument("--d_layers", type=int, help="PatchGAN layers (3 needs size >= 32)")
  ap.add_argument("--shots", type=int)
  ap.add_argument("--queries", type=int)
  ap.add_argument("--inner_optimizer", choices=("adam", "sgd"))
  ap.add_argument("--estimators", help="comma-separated, e.g. second_order,first_order")
  ap.add_argument("--remat", help="on,off | on | off")
  ap.add_argument("--inner_steps", help="comma-separated K values, e.g. 1,5,10,20")
  ap.add_argument("--meta_batch", help="comma-separated M values, e.g. 1,5")
  ap.add_argument("--repeats", type=int, help="timed runs per configuration (median)")
  ap.add_argument("--warmup", type=int)
  ap.add_argument("--torch", action="store_true",
                  help="also time the eager PyTorch reference (bil_jax.bench_torch)")
  ap.add_argument("--peak_size", choices=("large", "small"))
  ap.add_argument("--title")
  a = ap.parse_args(argv)
  opts = {}
  preset = "quick" if a.quick else a.preset
  if preset:
    opts.update(PRESETS[preset])
    opts["title"] = f"preset {preset}"
  for k, v in vars(a).items():
    if k in ("out", "preset", "quick") or v is None or v is False:
      continue
    opts[k] = v
  return opts, a.out


def main(argv=None):
  opts, out = parse_args(argv)
  print(f"bil_jax.bench on {jax.devices()[0].device_kind} ({jax.default_backend()}), "
        f"{os.cpu_count()} CPUs, jax {jax.__version__}, python {platform.python_version()}")
  run(opts, out)


if __name__ == "__main__":
  main()
