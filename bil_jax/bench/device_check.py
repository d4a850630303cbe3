"""One command for a machine with an accelerator: what the job costs there.

  python -m bil_jax.bench --preset=device_check --out=DIR
  python -m bil_jax.bench --preset=device_check --smoke --out=DIR   # tiny, for a CPU test

Parts, in order of priority, each recorded (or its error) and the next one started:

1. ``synthetic``: ``python -m bil_jax.main --config=configs/synthetic.py --mode=all``
   end to end: wall-clock, XLA compile time, steps/s of pre-training and meta-training
   (from the step lines of its log, so compilation is left out).
2. ``paper``: the pre-training step and the meta-step (first_order and second_order) of
   the ``paper_faces`` and ``paper_streets`` presets, in float32 and bfloat16, each in a
   fresh process: s/step, compile s, peak device memory, FLOPs and FLOP/s. Where the
   backend gives no FLOP count (GPU), a CPU process lowers the same step (``lax.conv``,
   no compile) and counts them, alongside.
3. ``torch``: the eager PyTorch reference at ``torch_ref_32`` on the same device.

The whole check keeps within :data:`BUDGET_S` (10 minutes with a margin): a part that
would start past its share is recorded as skipped (``--smoke``: no budget, one pre-training
and one first-order job, float32). Writes OUT/device_check.json (the
rows) and OUT/device_check.md (one table).
"""
import concurrent.futures
import dataclasses
import os
import re
import subprocess
import sys
import time
from typing import Callable, List, Optional

from bil_jax import compile_cache
from bil_jax.bench import common, options, presets, worker

BUDGET_S = 560.0
TORCH_RESERVE_S = 70.0
SYNTHETIC_TIMEOUT_S = 240.0
# --smoke: the synthetic run at the size of the multi-host tests, the paper presets shrunk.
_SMOKE_MAIN = [
    "--config=configs/synthetic.py:smoke", "--config.data.image_height=16",
    "--config.data.image_width=16", "--config.model.ngf=4", "--config.model.ndf=4",
    "--config.model.d_layers=1", "--config.model.num_downs=2", "--config.eval.is_steps=1",
    "--config.eval.aux_steps=1"
]
_SMOKE_PAPER = {
    "data.image_height": 16, "model.ngf": 4, "model.ndf": 4, "model.d_layers": 1,
    "loss.lambda_b": 0.0, "data.shots": 2, "data.queries": 2, "meta.meta_batch": 1,
    "meta.inner_steps": 1, "pretrain.batch_size": 2
}
# absl's own format (main at --verbosity=1): 'I1204 20:41:05.123456 ... meta step 5/150: ...'.
_STEP_LINE = re.compile(r"^[IWE]\d{4} (\d\d):(\d\d):(\d\d\.\d+).*?\b(pretrain|meta) step "
                        r"(\d+)(?:/\d+)?\b")


@dataclasses.dataclass
class Row:
  """One line of the device check's table (None: not measured)."""
  part: str
  configuration: str
  estimator: str = ""
  dtype: str = ""
  step_time_s: Optional[float] = None
  steps_per_s: Optional[float] = None
  compile_time_s: Optional[float] = None
  wall_s: Optional[float] = None
  peak_memory_bytes: Optional[int] = None
  flops: Optional[float] = None
  flops_per_s: Optional[float] = None
  status: str = "ok"


def phase_rates(log_text: str) -> dict:
  """{'pretrain': steps/s, 'meta': steps/s} from a bil_jax.main log's step lines (first
  to last line of each phase: compilation before the first line is left out); and
  'compile_s' from its XLA compile time line."""
  seen = {}
  for line in log_text.splitlines():
    m = _STEP_LINE.match(line)
    if m:
      t = int(m[1]) * 3600 + int(m[2]) * 60 + float(m[3])
      seen.setdefault(m[4], []).append((t, int(m[5])))
  out = {}
  for phase, pts in seen.items():
    (t0, s0), (t1, s1) = pts[0], pts[-1]
    if s1 > s0 and t1 > t0:
      out[phase] = (s1 - s0) / (t1 - t0)
  compiles = compile_cache.parse_summary(log_text)
  if compiles:
    out["compile_s"] = compiles[0]
  return out


def synthetic_part(out: str, smoke: bool, timeout_s: float, log: Callable) -> List[Row]:
  """Part 1: ``bil_jax.main --mode=all`` on the synthetic default, in a fresh process."""
  workdir = os.path.join(out, "synthetic")
  args = _SMOKE_MAIN if smoke else ["--config=configs/synthetic.py"]
  cmd = [
      sys.executable, "-m", "bil_jax.main", f"--workdir={workdir}", "--mode=all", "--verbosity=1",
      *args
  ]  # absl's log format: timestamps to the microsecond
  log(f"device check 1/3: {' '.join(cmd[1:])} (log: {workdir}.log)")
  t0 = time.perf_counter()
  try:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=timeout_s)
  except subprocess.TimeoutExpired as e:
    text = (e.stderr or b"").decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
    return [
        Row("synthetic", "--mode=all", status=f"did not finish in {timeout_s:.0f} s",
            wall_s=timeout_s, compile_time_s=phase_rates(text).get("compile_s"))
    ]
  wall = time.perf_counter() - t0
  with open(f"{workdir}.log", "w") as f:
    f.write(proc.stdout + proc.stderr)
  rates = phase_rates(proc.stderr)
  status = "ok" if proc.returncode == 0 else (f"exit status {proc.returncode}: "
                                              + " | ".join(proc.stderr.strip().splitlines()[-2:]))
  rows = [
      Row("synthetic", "--mode=all", wall_s=wall, compile_time_s=rates.get("compile_s"),
          status=status)
  ]
  for phase in ("pretrain", "meta"):
    if phase in rates:
      rows.append(
          Row("synthetic", f"{phase} steps", steps_per_s=rates[phase],
              step_time_s=1 / rates[phase]))
  return rows


def _paper_config(preset: str, dtype: str, smoke: bool):
  config = common.config_from_json(common.config_to_json(_base_config()))
  presets.apply_config(config, preset)
  if smoke:
    for k, v in _SMOKE_PAPER.items():
      common.set_key(config, k, v)
    common.set_key(config, "data.image_width", 16 * config.data.image_width // 128)
  common.set_key(config, "model.dtype", dtype)
  return config


def _base_config():
  from bil_jax import config_lib  # pylint: disable=import-outside-toplevel
  c = config_lib.base_config()
  c.lock()
  return c


def _meta_job(est: str) -> dict:
  """A meta-step cost job; second order with remat "step" (without remat, XLA's memory
  analysis of paper_faces implies 188 GiB, over an H200's memory; docs/benchmark.md)."""
  return {
      "kind": "cost", "estimator": {"name": est, "options": ""}, "inner_steps": None,
      "meta_batch": None, "remat": "step" if est == "second_order" else "none"
  }


def _paper_jobs(smoke: bool) -> list:
  """(preset, dtype, job) in the order they run: float32 before bfloat16; at the smoke
  size one pre-training and one first-order job."""
  if smoke:
    return [("paper_faces", "float32", {"kind": "pretrain"}),
            ("paper_streets", "float32", _meta_job("first_order"))]
  jobs = []
  for dtype in ("float32", "bfloat16"):
    for preset in ("paper_faces", "paper_streets"):
      jobs.append((preset, dtype, {"kind": "pretrain"}))
      jobs += [(preset, dtype, _meta_job(est)) for est in ("first_order", "second_order")]
  return jobs


def _left(deadline: float) -> Optional[float]:
  """Seconds to ``deadline`` (at least 1), or None where there is none (inf)."""
  return None if deadline == float("inf") else max(1.0, deadline - time.time())


def _cpu_flops(config, job: dict, out: str, deadline: float) -> Optional[float]:
  """FLOPs of ``job``'s step lowered (not compiled) on the CPU with lax.conv, in a fresh
  process stopped at ``deadline``; None where it fails or is stopped."""
  job = dict(job, kind="flops", config=common.config_to_json(config))
  r = worker.run_in_process(job, out, log=lambda _: None, timeout_s=_left(deadline),
                            env={"JAX_PLATFORMS": "cpu", "BIL_JAX_CONV_IMPL": "xla"})
  return r.get("flops")


def _in_process(job: dict) -> dict:
  """``job`` in this process (the smoke size); an error as {'error'}."""
  try:
    return worker.run_job(job)
  except Exception as e:  # pylint: disable=broad-except
    return {"error": f"{type(e).__name__}: {' '.join(str(e).split())}"}


def paper_part(out: str, smoke: bool, deadline: float, peaks: dict, log: Callable) -> List[Row]:
  """Part 2: the paper presets' pre-training and meta-steps (see the module docstring)."""
  import jax  # pylint: disable=import-outside-toplevel
  jobs = _paper_jobs(smoke)
  on_cpu = jax.default_backend() == "cpu"
  rows, pool = [], concurrent.futures.ThreadPoolExecutor(max_workers=2)
  for i, (preset, dtype, job) in enumerate(jobs):
    config = _paper_config(preset, dtype, smoke)
    msg = common.ensure_perceptual_weights(config, out, config.seed)
    if job["kind"] == "cost":
      job = dict(job, inner_steps=int(config.meta.inner_steps),
                 meta_batch=int(config.meta.meta_batch))
    label = "pretrain" if job["kind"] == "pretrain" else job["estimator"]["name"]
    flops = None if on_cpu else pool.submit(_cpu_flops, config, job, out, deadline)
    left = deadline - time.time()
    log(f"device check 2/3 ({i + 1}/{len(jobs)}): {preset} {label} {dtype}"
        + (f" ({msg.split(':')[0]})" if msg else ""))
    if left < 30:
      rows.append(Row("paper", preset, label, dtype, status="skipped: out of time"))
      continue
    full = dict(job, config=common.config_to_json(config), peaks=peaks, repeats=2, warmup=1,
                flops=on_cpu)
    r = (_in_process(full)
         if smoke else worker.run_in_process(full, out, log, timeout_s=_left(deadline)))
    if "error" in r:
      rows.append(Row("paper", preset, label, dtype, status=r["error"]))
      continue
    try:
      n = (flops.result(timeout=_left(deadline)) if flops is not None else r.get("flops"))
    except concurrent.futures.TimeoutError:
      n = None
    rows.append(
        Row("paper", preset, label, dtype, step_time_s=r["step_time_s"],
            steps_per_s=1 / r["step_time_s"], compile_time_s=r["compile_time_s"],
            peak_memory_bytes=r["peak_memory_bytes"], flops=n,
            flops_per_s=n / r["step_time_s"] if n else None))
  pool.shutdown(wait=False, cancel_futures=True)
  return rows


def torch_part(out: str, smoke: bool, log: Callable) -> List[Row]:
  """Part 3: the eager PyTorch reference at torch_ref_32 (smoke: 32x32, ngf 2, M=1)."""
  import importlib.util  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  from bil_jax.bench import sweep  # pylint: disable=import-outside-toplevel
  if importlib.util.find_spec("torch") is None:
    return [Row("torch", "torch_ref_32", status="skipped: PyTorch is not installed")]
  cfg = presets.PRESETS["torch_ref_32"]["config"]
  sizes = dict(size=32, ngf=2 if smoke else cfg["model.ngf"], ndf=2 if smoke else cfg["model.ndf"],
               num_classes=cfg["data.num_classes"], shots=1 if smoke else 5,
               queries=1 if smoke else 5, repeats=1 if smoke else 3,
               device="cuda" if jax.default_backend() == "gpu" else "cpu")
  steps, meta_batch = (1, 1) if smoke else (5, 5)
  rows = []
  for est in ("first_order",) if smoke else ("second_order", "first_order"):
    log(f"device check 3/3: PyTorch eager {est} ({sizes['device']})")
    try:
      r = sweep.torch_reference(sizes, est, steps, meta_batch, out)
    except (RuntimeError, OSError) as e:
      rows.append(Row("torch", "torch_ref_32", est, "float32", status=str(e)))
      continue
    rows.append(
        Row("torch", "torch_ref_32", est, "float32", step_time_s=r["step_time_s"],
            steps_per_s=1 / r["step_time_s"], flops=r.get("flops"),
            flops_per_s=r.get("flops_per_s")))
  return rows


def _cell(v, fmt: str) -> str:
  return "" if v is None else format(v, fmt)


def table(rows: List[Row], header: str) -> str:
  """The markdown of ``rows``."""
  lines = [
      header, "", "| part | configuration | estimator | dtype | s/step | steps/s | "
      "compile s | wall s | peak MiB | GFLOP | TFLOP/s | status |",
      "|---|---|---|---|---|---|---|---|---|---|---|---|"
  ]
  for r in rows:
    mib = None if r.peak_memory_bytes is None else r.peak_memory_bytes / 2 ** 20
    lines.append(
        f"| {r.part} | {r.configuration} | {r.estimator} | {r.dtype} | "
        f"{_cell(r.step_time_s, '.4f')} | {_cell(r.steps_per_s, '.2f')} | "
        f"{_cell(r.compile_time_s, '.1f')} | {_cell(r.wall_s, '.0f')} | {_cell(mib, ',.0f')} | "
        f"{_cell(None if r.flops is None else r.flops / 1e9, ',.4g')} | "
        f"{_cell(None if r.flops_per_s is None else r.flops_per_s / 1e12, '.3g')} | "
        f"{r.status} |")
  return "\n".join(lines) + "\n"


def run(out: str, opts: options.SweepOptions, log: Callable = print) -> List[str]:
  """Runs the three parts (``opts.smoke``: tiny sizes, the CPU test) and writes
  OUT/device_check.{json,md}; returns their paths."""
  import jax  # pylint: disable=import-outside-toplevel
  from bil_jax import io_utils  # pylint: disable=import-outside-toplevel
  from bil_jax.bench import cost  # pylint: disable=import-outside-toplevel
  os.makedirs(out, exist_ok=True)
  start = time.time()
  log(f"expected: at most {BUDGET_S / 60:.0f} min (each part stops at its share of the "
      "budget); on a 2-core CPU the full check does not fit it (use --smoke there)")
  rows = []
  for part in ("synthetic", "paper", "torch"):
    try:
      if part == "synthetic":
        rows += synthetic_part(out, opts.smoke, 3600 if opts.smoke else SYNTHETIC_TIMEOUT_S, log)
      elif part == "paper":
        peaks = cost.measure_peaks("small" if opts.smoke else "large")
        deadline = float("inf") if opts.smoke else start + BUDGET_S - TORCH_RESERVE_S
        rows += paper_part(out, opts.smoke, deadline, peaks, log)
      else:
        rows += torch_part(out, opts.smoke, log)
    except Exception as e:  # pylint: disable=broad-except
      rows.append(Row(part, "", status=f"failed: {type(e).__name__}: {' '.join(str(e).split())}"))
  header = (f"Device check on {jax.devices()[0].device_kind} ({jax.default_backend()}), "
            f"jax {jax.__version__}{', smoke size' if opts.smoke else ''}: "
            f"{time.time() - start:.0f} s in all.")
  paths = [os.path.join(out, "device_check.json"), os.path.join(out, "device_check.md")]
  io_utils.write_json(paths[0], {"header": header, "rows": [dataclasses.asdict(r) for r in rows]})
  md = table(rows, header)
  io_utils.write_atomic(paths[1], md)
  log(md)
  return paths
