"""Cost of one meta-training (or pre-training) step: compile time, step time, memory, FLOPs.

For one configuration (a config whose ``meta.inner_steps``, ``meta.meta_batch`` and
``meta.remat`` are set, and one estimator), times the compiled
:func:`bil_jax.meta.make_meta_step` (outer optimizer included) after warm-up; compilation
is timed separately. :func:`measure_peaks` gives the conv and matmul FLOP/s of this device.

Peak memory: the device's ``memory_stats()['peak_bytes_in_use']`` where the backend has
it (GPU, TPU; the benchmark runs each configuration in a fresh process, so it is that
configuration's peak), otherwise (CPU) XLA's compiled memory analysis of the step:
arguments + outputs + temporaries - aliased bytes. FLOPs: XLA's cost analysis of the step
lowered with the inner loop unrolled (a loop body is counted once), at K = 1 and 2 and
extrapolated linearly in K (the step is affine in K). Loops inside an estimator (the
implicit estimator's linear solver) are still counted once.

:func:`compile_one` lowers and compiles a meta-step without training (``--compile_only``):
its FLOPs, XLA's memory analysis (arguments, outputs, temporaries, aliased; the peak they
imply) and, where it is expected to be short, one timed step. :func:`pretrain_one` times
the pre-training step (:func:`bil_jax.gan.gan_step` on a pooled batch).
"""
import dataclasses
import functools
import os
import resource
import statistics
import sys
import time
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp

from bil_jax import adapt, builders, estimators, gan, meta, nonfinite, parallel
from bil_jax.bench.common import EstimatorSpec, random_tasks
from bil_jax.data import loading
from bil_jax.models import convs

# --compile_only times one step only where FLOPs / (this share of the measured conv peak)
# is under its limit (docs/benchmark.md gives the shares the CPU steps reach).
EXPECTED_UTILIZATION = 0.2


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
  return {
      "matmul_peak_flops_per_s": 2 * n ** 3 / t_mm,
      "conv_peak_flops_per_s": 2 * b * hw * hw * 9 * c * c / t_conv
  }


@dataclasses.dataclass
class Setup:
  """What a meta-step needs besides the tasks: config, GAN, GP parameters (with the
  estimator's meta-parameters), outer optimizer and its state, mesh, frozen weights."""
  config: Any
  spec: Any
  params: Any
  outer_opt: Any
  opt_state: Any
  mesh: Any
  frozen: Any = None
  model_name: str = ""


def make_setup(config, estimator: str = "second_order", spec=None, params=None,
               model_name: str = "", frozen=None) -> Setup:
  """Parameters, outer optimizer and mesh for ``config`` (``spec``/``params`` override the
  model of ``config``, e.g. tiny test networks). Frozen perceptual weights come from
  ``loss.vgg_weights`` when lambda_b > 0 (:func:`bil_jax.builders.load_frozen`)."""
  if spec is None:
    spec = builders.build_spec(config, config.data.num_classes)
  if params is None:
    params = builders.init_params(spec, config.seed, loading.image_hw(config))
  if frozen is None:
    frozen = builders.load_frozen(config)
  params = estimators.init_meta_parameters(estimator, params)
  outer = builders.outer_optimizer(config)
  mesh = parallel.make_mesh()
  params = parallel.replicate(mesh, params)
  return Setup(config, spec, params, outer, parallel.replicate(mesh, outer.init(params)), mesh,
               frozen=parallel.replicate(mesh, frozen) if frozen is not None else None,
               model_name=model_name or config.model.name)


def _cost(obj) -> dict:
  ca = obj.cost_analysis()
  if isinstance(ca, (list, tuple)):
    ca = ca[0] if ca else {}
  return ca or {}


def step_fn(setup: Setup, est: EstimatorSpec, steps: int, remat, unroll=1):
  """The jitted meta-step of ``est`` with K = ``steps`` and the given remat mode."""
  loop = dataclasses.replace(builders.inner_loop(setup.config, setup.spec, steps), remat=remat,
                             unroll=unroll)
  return meta.make_meta_step(loop, est.name, setup.outer_opt, setup.mesh,
                             estimator_options=est.options)


def step_flops(setup: Setup, est: EstimatorSpec, steps: int, remat, args) -> float:
  """XLA cost-analysis FLOPs of the step, with the inner loop unrolled at K=1, 2 and
  extrapolated linearly (see the module docstring); unrolled at K itself where an
  estimator's options rule out K=1 (truncated with T > 1), and for remat "nested", which
  splits the loop into segments only from K = 4 on (at K = 1 and 2 it is "step", so the
  line through them would miss the segments' recomputation)."""

  def flops_at(k):
    lowered = step_fn(setup, est, k, remat, unroll=True).lower(*args)
    # nan where the backend has no cost analysis of the lowered program (GPU). Its compiled
    # programs' count leaves out the cuDNN convolutions (docs/benchmark.md), so it is not
    # used.
    return float(_cost(lowered).get("flops") or float("nan"))

  if adapt.remat_mode(remat) == "nested":
    return flops_at(steps)
  try:
    f1, f2 = flops_at(1), flops_at(2)
  except ValueError:  # an option needs a larger K (truncated's T > 1): count K itself
    return flops_at(steps)
  return f1 + (steps - 1) * (f2 - f1)


def device_peak_bytes() -> Optional[int]:
  """The device's peak bytes in use (GPU/TPU), or None where the backend has no stats."""
  try:
    stats = jax.local_devices()[0].memory_stats()
  except Exception:  # pylint: disable=broad-except
    stats = None
  if stats and "peak_bytes_in_use" in stats:
    return int(stats["peak_bytes_in_use"])
  return None


def rss_peak_bytes() -> int:
  r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return int(r) * (1 if sys.platform == "darwin" else 1024)


def memory_analysis(compiled) -> dict:
  """XLA's compiled memory analysis in bytes: xla_{argument,output,temp,alias}_bytes and
  xla_peak_bytes = arguments + outputs + temporaries - aliased ({} where there is none)."""
  mem = compiled.memory_analysis()
  if mem is None:
    return {}
  out = {
      "xla_argument_bytes": int(mem.argument_size_in_bytes),
      "xla_output_bytes": int(mem.output_size_in_bytes),
      "xla_temp_bytes": int(mem.temp_size_in_bytes), "xla_alias_bytes": int(mem.alias_size_in_bytes)
  }
  out["xla_peak_bytes"] = (out["xla_argument_bytes"] + out["xla_output_bytes"]
                           + out["xla_temp_bytes"] - out["xla_alias_bytes"])
  return out


def _shape_keys(config) -> dict:
  """The config's sizes, as every record states them."""
  device = jax.devices()[0]
  return {
      "image_size": int(config.data.image_height), "image_width": int(config.data.image_width),
      "ngf": int(config.model.ngf), "ndf": int(config.model.ndf),
      "num_classes": int(config.data.num_classes), "shots": int(config.data.shots),
      "queries": int(config.data.queries), "lambda_b": float(config.loss.lambda_b),
      "dtype": str(config.model.dtype), "implementation": "jax", "device": device.device_kind,
      "platform": jax.default_backend(), "conv_impl": convs.conv_impl()
  }


def _step_args(setup: Setup, meta_batch: int, seed: int) -> tuple:
  tasks = parallel.shard_tasks(setup.mesh, random_tasks(setup.config, meta_batch, seed))
  rngs = parallel.shard_tasks(setup.mesh, meta.task_rngs(jax.random.PRNGKey(seed), 0, meta_batch))
  return (setup.params, setup.opt_state, tasks, rngs, setup.frozen)


def available_memory_bytes() -> Optional[int]:
  """The host's available physical memory (None where the OS does not say)."""
  try:
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
  except (ValueError, OSError, AttributeError):
    return None


def compile_one(setup: Setup, est: EstimatorSpec, steps: int, meta_batch: int, remat: str,
                peaks: dict, step_limit_s: float = 300.0, seed: int = 0,
                on_flops: Optional[Callable[[float], None]] = None) -> dict:
  """Lowers and compiles one meta-step; its FLOPs, memory analysis and compile time, and
  one timed step (``step_time_s``) where FLOPs / (EXPECTED_UTILIZATION x the conv peak)
  is under ``step_limit_s`` and its memory under half the host's available memory (else
  None, with ``step_skipped`` saying why)."""
  args = _step_args(setup, meta_batch, seed)
  n_flops = step_flops(setup, est, steps, remat, args)
  if on_flops is not None:  # known before the (long) compile
    on_flops(n_flops)
  t0 = time.perf_counter()
  compiled = step_fn(setup, est, steps, remat).lower(*args).compile()
  compile_s = time.perf_counter() - t0
  mem = memory_analysis(compiled)
  expected = n_flops / (EXPECTED_UTILIZATION * peaks["conv_peak_flops_per_s"])
  step_time, skipped = None, ""
  free = available_memory_bytes()
  if mem.get("xla_peak_bytes") and free and mem["xla_peak_bytes"] > free / 2:
    skipped = (f"needs {mem['xla_peak_bytes'] / 2 ** 30:.1f} GiB, over half the "
               f"{free / 2 ** 30:.1f} GiB available")
  elif expected <= step_limit_s:
    t = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    step_time = time.perf_counter() - t
  else:
    skipped = (f"expected {expected:.0f} s at {EXPECTED_UTILIZATION:.0%} of the conv peak, "
               f"over the {step_limit_s:.0f} s limit")
  return {
      "model": setup.model_name, "estimator": est.label, "estimator_name": est.name,
      "estimator_options": est.options, "remat": remat, "inner_steps": int(steps),
      "meta_batch": int(meta_batch), "compile_time_s": compile_s, "flops": n_flops,
      "step_time_s": step_time, "step_skipped": skipped, "expected_step_time_s": expected,
      "peak_memory_bytes": mem.get("xla_peak_bytes"), "memory_source": "xla_memory_analysis",
      **mem, "peak_flops_per_s": peaks["conv_peak_flops_per_s"],
      "inner_optimizer": setup.config.meta.inner_optimizer.name, **_shape_keys(setup.config)
  }


def pretrain_step(config, seed: int = 0) -> tuple:
  """(jitted pre-training step, its arguments): the guarded optimizer of pre-training on a
  batch of ``pretrain.batch_size`` random pairs, on one device."""
  spec = builders.build_spec(config, config.data.num_classes)
  params = builders.init_params(spec, config.seed, loading.image_hw(config))
  opt = nonfinite.skip_nonfinite(builders.pretrain_optimizer(config))
  tasks = random_tasks(config, 1, seed)["support"]
  rows = int(config.pretrain.batch_size)
  pairs = jax.tree.map(lambda x: jnp.repeat(x[0], -(-rows // x.shape[1]), 0)[:rows], tasks)
  step = jax.jit(functools.partial(gan.gan_step, spec, opt))
  return step, (params, gan.init_opt_state(opt, params), pairs, jax.random.PRNGKey(seed),
                builders.load_frozen(config))


def pretrain_one(config, peaks: dict, repeats: int = 5, seed: int = 0, flops: bool = True) -> dict:
  """Times the pre-training step (:func:`pretrain_step`); its record (estimator
  'pretrain', meta_batch the batch size)."""
  step, args = pretrain_step(config, seed)
  t0 = time.perf_counter()
  lowered = step.lower(*args)
  compiled = lowered.compile()
  compile_s = time.perf_counter() - t0
  step_time = _median_time(compiled, *args, repeats=repeats)
  mem = memory_analysis(compiled)
  device_bytes = device_peak_bytes()
  n_flops = float(_cost(lowered).get("flops") or float("nan")) if flops else float("nan")
  return {
      "model": config.model.name, "estimator": "pretrain", "remat": "-", "inner_steps": 0,
      "meta_batch": int(config.pretrain.batch_size), "step_time_s": step_time,
      "compile_time_s": compile_s, "flops": n_flops, "flops_per_s": n_flops / step_time,
      "peak_memory_bytes": device_bytes if device_bytes is not None else mem.get("xla_peak_bytes"),
      "memory_source": "device" if device_bytes is not None else "xla_memory_analysis",
      **mem, "peak_flops_per_s": peaks["conv_peak_flops_per_s"], "inner_optimizer": "-",
      **_shape_keys(config)
  }


def count_flops(config, est: Optional[EstimatorSpec], steps: int = 0, meta_batch: int = 0,
                remat: str = "none") -> float:
  """FLOPs of the meta-step of ``est`` (:func:`step_flops`), or of the pre-training step
  (``est`` None), lowered without compiling."""
  if est is None:
    step, args = pretrain_step(config)
    return float(_cost(step.lower(*args)).get("flops") or float("nan"))
  setup = make_setup(config, est.name)
  return step_flops(setup, est, steps, remat, _step_args(setup, meta_batch, 0))


def bench_one(setup: Setup, est: EstimatorSpec, steps: int, meta_batch: int, remat: str,
              peaks: dict, repeats: int = 5, warmup: int = 1, seed: int = 0,
              flops: bool = True) -> dict:
  """Times one configuration; returns its record (keys: bench.RECORD_KEYS and more)."""
  config = setup.config
  args = _step_args(setup, meta_batch, seed)
  step = step_fn(setup, est, steps, remat)
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

  mem = memory_analysis(compiled)
  xla_bytes = mem.get("xla_peak_bytes")
  device_bytes = device_peak_bytes()
  peak_bytes = device_bytes if device_bytes is not None else xla_bytes
  n_flops = step_flops(setup, est, steps, remat, args) if flops else float("nan")
  metrics = jax.device_get(out[2])
  return {
      "model": setup.model_name,
      "estimator": est.label,
      "estimator_name": est.name,
      "estimator_options": est.options,
      "remat": remat,
      "inner_steps": int(steps),
      "meta_batch": int(meta_batch),
      "step_time_s": step_time,
      "compile_time_s": t2 - t1,
      "lower_time_s": t1 - t0,
      "peak_memory_bytes": peak_bytes,
      "memory_source": "device" if device_bytes is not None else "xla_memory_analysis",
      "xla_peak_bytes": xla_bytes,
      "xla_temp_bytes": mem.get("xla_temp_bytes"),
      "process_peak_rss_bytes": rss_peak_bytes(),
      "flops": n_flops,
      "flops_per_s": n_flops / step_time,
      "peak_flops_per_s": peaks["conv_peak_flops_per_s"],
      "conv_utilization": n_flops / step_time / peaks["conv_peak_flops_per_s"],
      "matmul_peak_flops_per_s": peaks["matmul_peak_flops_per_s"],
      "tasks_per_s": meta_batch / step_time,
      "step_times_s": times,
      "loss": float(metrics["query_g_loss_after"]),
      "inner_optimizer": config.meta.inner_optimizer.name,
      **_shape_keys(config),
  }
