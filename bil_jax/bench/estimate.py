"""Expected durations of benchmark commands, printed before they start.

A rough model fitted to the 2-core CPU measurements of docs/benchmark.md (an idle machine;
a loaded one is slower): a fresh process costs :data:`PROCESS_S`; a compile
:data:`COMPILE_S` per estimator kind, times :data:`VGG_COMPILE_FACTOR` with the LPIPS-VGG
term on; a step its FLOPs (scaled from the measured 32x32, ngf 16, K = 5, M = 5 step) at
:data:`CPU_FLOPS` sustained. On an accelerator it overestimates: a bound, not a promise.
"""
import math

PROCESS_S = 10.0
COMPILE_S = {
    "second_order": 45.0, "truncated": 45.0, "es": 40.0, "implicit": 60.0, "first_order": 20.0,
    "reptile": 20.0
}
VGG_COMPILE_FACTOR = 6.0
NESTED_COMPILE_FACTOR = 1.5
CPU_FLOPS = 15e9
# GFLOP of one meta-step at 32x32, ngf 16, M = 5 tasks of 5 + 5 pairs, K = 5, by estimator
# kind (XLA's count, docs/benchmark.md); others scale from these.
_GFLOP_32 = {"second_order": 56.0, "first_order": 13.4, "reptile": 12.0}
VGG16_GFLOP_224 = 15.5  # one VGG16 forward pass at 224x224


def meta_step_gflop(config, estimator: str, steps: int, meta_batch: int) -> float:
  """Rough GFLOP of one meta-step of ``estimator`` at K = ``steps``, M = ``meta_batch``."""
  return gflop(config.data.image_height,
               config.data.image_width, config.model.ngf, config.data.shots, config.data.queries,
               bool(config.loss.lambda_b), estimator, steps, meta_batch)


def gflop(height: int, width: int, ngf: int, shots: int, queries: int, perceptual: bool,
          estimator: str, steps: int, meta_batch: int) -> float:
  """Rough GFLOP of one meta-step (see :func:`meta_step_gflop`)."""
  area = height * width / 1024
  pairs = (shots + queries) / 10
  second = estimator not in ("first_order", "reptile", "es", "implicit")
  base = _GFLOP_32["second_order" if second else "first_order"]
  per_task = base / 5 * area * (ngf / 16) ** 2 * pairs * (steps + 1) / 6
  if perceptual:
    images = steps * shots + queries
    per_task += 4 * VGG16_GFLOP_224 * area * 1024 / 224 ** 2 * images * (3 if second else 1)
  if estimator == "implicit":
    per_task *= 4  # the linear solver's Jacobian-vector products
  return per_task * meta_batch


def job_seconds(config, job: dict, repeats: int, warmup: int) -> float:
  """Expected seconds of one cost or compile job (see the module docstring)."""
  name = job["estimator"]["name"]
  compile_s = COMPILE_S.get(name, 45.0)
  if config.loss.lambda_b:
    compile_s *= VGG_COMPILE_FACTOR
  if job.get("remat") == "nested":
    compile_s *= NESTED_COMPILE_FACTOR
  step_s = meta_step_gflop(config, name, job["inner_steps"], job["meta_batch"]) * 1e9 / CPU_FLOPS
  runs = 1 if job["kind"] == "compile" else max(warmup, 1) + repeats
  return PROCESS_S + compile_s + runs * step_s


def sweep_seconds(config, jobs, opts) -> float:
  """Expected seconds of the cost part of a sweep (fidelity and outcome not counted)."""
  return sum(job_seconds(config, j, opts.repeats, opts.warmup) for j in jobs)


def say(seconds: float) -> str:
  """'about 4 min' / 'about 40 s' / 'about 2.5 h'."""
  if seconds < 90:
    return f"about {int(math.ceil(seconds / 10) * 10)} s"
  if seconds < 5400:
    return f"about {int(math.ceil(seconds / 60))} min"
  return f"about {seconds / 3600:.1f} h"
