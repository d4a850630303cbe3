"""Outcome: what each estimator buys in held-out quality, at equal meta-steps and equal time.

From one pre-trained checkpoint (``python -m bil_jax.main --mode=pretrain`` once, in
OUT/outcome/pretrained), every estimator meta-trains in a fresh workdir that holds a copy
of its ``pretrain/`` and ``tfds/`` folders (not its config.json), with
``python -m bil_jax.main --mode=metatrain``:

* same steps: ``meta.steps = N`` for every estimator;
* same time: a budget of B seconds of meta-step time; an estimator whose compiled step
  takes t seconds (the cost table's median at the config's K, M and remat) gets
  floor(B / t) steps (at least 1). B defaults to N times the slowest estimator's step
  time, so the slowest one runs N steps in both settings. Compilation is not charged.

The outcome is meta-training's own held-out probe (``WORKDIR/meta/heldout_adaptation_*.json``):
the mean query L1 on the first 8 validation tasks (never test) after the same IS
adaptation (the config's K inner steps), at the start (equal for all: the same checkpoint)
and at the end.

Seeds: with ``seeds = S`` every run is repeated with ``config.seed + i`` for i < S (the
meta-batches, the task keys and the held-out episodes change with the seed; the
pre-trained checkpoint does not), so every estimator sees the same S seeds.
:func:`summarize` gives each (setting, estimator)'s mean and spread over them.
"""
import glob
import json
import math
import os
import shutil
import subprocess
import sys
import time
from typing import Callable, Dict, List

import numpy as np

from bil_jax.bench.common import EstimatorSpec, config_from_json, config_to_json, set_key

CONFIG_PY = '''"""The benchmark's config, frozen as JSON beside this file (written by bil_jax.bench)."""
import json
import os

import ml_collections


def get_config(arg=""):
  del arg
  with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "config.json")) as f:
    c = ml_collections.ConfigDict(json.load(f))
  c.lock()
  return c
'''


def write_config(config, folder: str) -> str:
  """Writes ``folder/config.json`` and a ``folder/bench_config.py`` that loads it; returns
  the .py path (what ``python -m bil_jax.main --config=`` takes)."""
  os.makedirs(folder, exist_ok=True)
  config = config_from_json(config_to_json(config))
  set_key(config, "meta.estimator_options", "")  # each run names its own
  with open(os.path.join(folder, "config.json"), "w") as f:
    f.write(config_to_json(config))
  path = os.path.join(folder, "bench_config.py")
  with open(path, "w") as f:
    f.write(CONFIG_PY)
  return os.path.abspath(path)


def run_main(config_py: str, workdir: str, mode: str, overrides: Dict[str, object],
             log_path: str) -> dict:
  """``python -m bil_jax.main`` in a fresh process; {'returncode', 'wall_s', 'error'}."""
  cmd = [
      sys.executable, "-m", "bil_jax.main", f"--config={config_py}", f"--workdir={workdir}",
      f"--mode={mode}"
  ]
  cmd += [f"--config.{k}={v}" for k, v in overrides.items()]
  t0 = time.perf_counter()
  with open(log_path, "w") as log:
    proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=False)
  wall = time.perf_counter() - t0
  error = ""
  if proc.returncode:
    with open(log_path) as f:
      lines = [l.strip() for l in f if l.strip()]
    error = next((l for l in reversed(lines) if l.startswith("error:")),
                 lines[-1] if lines else f"exit status {proc.returncode}")
  return {"returncode": proc.returncode, "wall_s": wall, "error": error, "command": cmd}


def copy_pretrained(src: str, dst: str) -> None:
  """A fresh workdir ``dst`` with ``src``'s pretrain/ and tfds/ (not its config.json)."""
  if os.path.exists(dst):
    shutil.rmtree(dst)
  os.makedirs(dst)
  for name in ("pretrain", "tfds"):
    if os.path.isdir(os.path.join(src, name)):
      shutil.copytree(os.path.join(src, name), os.path.join(dst, name))


def read_heldout(workdir: str) -> dict:
  """The start/end held-out L1 of the newest ``meta/heldout_adaptation_*.json``."""
  files = sorted(glob.glob(os.path.join(workdir, "meta", "heldout_adaptation_*.json")))
  if not files:
    return {}
  with open(files[-1]) as f:
    h = json.load(f)
  out = {}
  for when in ("start", "end"):
    for k, v in h.get(when, {}).items():
      out[f"{k}_{when}"] = v
  return out


def budget_steps(budget_s: float, step_time_s: float) -> int:
  """Meta-steps that fit a budget of ``budget_s`` seconds at ``step_time_s`` each (>= 1)."""
  return max(1, int(math.floor(budget_s / step_time_s + 1e-9)))


def pretrain(config, out_dir: str, log: Callable = print) -> str:
  """Pre-trains once in OUT/outcome/pretrained (resumes if it is there); its workdir."""
  folder = os.path.join(out_dir, "outcome")
  config_py = write_config(config, folder)
  workdir = os.path.join(folder, "pretrained")
  log(f"outcome: pre-training {config.pretrain.steps} steps in {workdir}")
  r = run_main(config_py, workdir, "pretrain", {}, os.path.join(folder, "pretrain.log"))
  if r["returncode"]:
    raise RuntimeError(f"pre-training for --outcome failed: {r['error']} "
                       f"(log: {folder}/pretrain.log)")
  log(f"outcome: pre-training took {r['wall_s']:.0f} s")
  return workdir


SETTINGS = ("same_steps", "same_time")


def parse_settings(text: str) -> List[str]:
  """``--outcome_settings`` ("same_steps,same_time") -> the list; a one-line error else."""
  got = [t.strip() for t in str(text).split(",") if t.strip()]
  bad = [t for t in got if t not in SETTINGS]
  if bad or not got:
    raise ValueError(f"--outcome_settings={text!r}: expected a comma-separated subset of "
                     f"{','.join(SETTINGS)}")
  return got


def check_pretrained(workdir: str) -> str:
  """``workdir`` if it holds a pre-training checkpoint (``pretrain/checkpoints``); else a
  one-line error naming it."""
  if not os.path.isdir(os.path.join(workdir, "pretrain", "checkpoints")):
    raise FileNotFoundError(f"--outcome_pretrained={workdir}: no pretrain/checkpoints in it "
                            "(a workdir of python -m bil_jax.main --mode=pretrain)")
  return os.path.abspath(workdir)


def run_outcome(config, specs: List[EstimatorSpec], step_times: Dict[str, float], steps: int,
                budget_s: float, pretrained: str, out_dir: str, log: Callable = print,
                seeds: int = 1, settings=SETTINGS) -> List[dict]:
  """Meta-trains every estimator from ``pretrained`` at equal steps and equal time budget.

  Args:
    step_times: estimator label -> seconds per compiled meta-step at the config's K/M/remat.
    steps: N, the meta-steps of the equal-steps runs.
    budget_s: B, seconds of meta-step time of the equal-time runs (<= 0: N x the slowest).
    seeds: S; every run is made with config.seed + i, i < S.
    settings: which of SETTINGS to run.

  Returns:
    One record per (setting, estimator, seed) with the held-out L1 before/after IS
    adaptation (a run that both settings ask for is made once).
  """
  folder = os.path.join(out_dir, "outcome")
  config_py = write_config(config, folder)
  if budget_s <= 0:
    budget_s = steps * max(step_times[s.label] for s in specs)
  records, done = [], {}
  for setting, s, i in ((a, b, c) for a in settings for b in specs for c in range(seeds)):
    seed = int(config.seed) + i
    n = steps if setting == "same_steps" else budget_steps(budget_s, step_times[s.label])
    key = (s.label, n, seed)
    name = f"{s.label}_{n}steps".replace("(", "_").replace(")", "").replace("=", "")
    name = name.replace(",", "_").replace(":", "_") + (f"_seed{seed}" if seeds > 1 else "")
    if key not in done:
      workdir = os.path.join(folder, name)
      copy_pretrained(pretrained, workdir)
      overrides = {
          "meta.estimator": s.name, "meta.steps": n, "meta.image_every": n,
          "meta.checkpoint_every": n, "meta.log_every": max(1, n // 5), "seed": seed
      }
      if s.options:
        overrides["meta.estimator_options"] = s.options
      log(f"outcome: {setting} {s.label}: {n} meta-steps, seed {seed}")
      r = run_main(config_py, workdir, "metatrain", overrides, os.path.join(folder, f"{name}.log"))
      r.update(read_heldout(workdir))
      done[key] = r
      if r["returncode"]:
        log(f"outcome: {s.label} failed: {r['error']}")
      else:
        log(f"outcome: {s.label} {n} steps: held-out L1 after IS adaptation "
            f"{r.get('heldout_l1_after_start', float('nan')):.4f} -> "
            f"{r.get('heldout_l1_after_end', float('nan')):.4f} ({r['wall_s']:.0f} s)")
    r = done[key]
    records.append({
        "estimator": s.label, "setting": setting, "meta_steps": n, "seed": seed,
        "budget_s": budget_s if setting == "same_time" else None,
        "step_time_s": step_times[s.label], "meta_time_s": n * step_times[s.label],
        "process_wall_s": r["wall_s"], "error": r["error"],
        **{k: v for k, v in r.items() if k.startswith("heldout_")}
    })
  return records


def _mean_std(values: List[float]) -> tuple:
  """(mean, sample standard deviation; 0 for one value), as bil_jax.report gives seeds'."""
  return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def summarize(records: List[dict]) -> List[dict]:
  """Per (setting, estimator, meta-steps): the seeds' held-out L1 after IS adaptation at the
  end (mean, std, min, max), its gain over the start (start - end, mean and std) and the
  mean process wall-clock; failed runs are counted, not averaged."""
  groups: Dict[tuple, List[dict]] = {}
  for r in records:
    groups.setdefault((r["setting"], r["estimator"], r["meta_steps"]), []).append(r)
  out = []
  for (setting, est, n), rs in groups.items():
    ok = [r for r in rs if not r.get("error") and r.get("heldout_l1_after_end") is not None]
    row = {
        "setting": setting, "estimator": est, "meta_steps": n, "seeds": len(ok),
        "failed": len(rs) - len(ok), "step_time_s": rs[0]["step_time_s"],
        "meta_time_s": rs[0]["meta_time_s"], "peak_memory_bytes": rs[0].get("peak_memory_bytes")
    }
    if ok:
      end = [r["heldout_l1_after_end"] for r in ok]
      gain = [r["heldout_l1_after_start"] - r["heldout_l1_after_end"] for r in ok]
      row.update(zip(("end_mean", "end_std"), _mean_std(end)))
      row.update(zip(("gain_mean", "gain_std"), _mean_std(gain)))
      row.update(end_min=min(end), end_max=max(end),
                 start_mean=_mean_std([r["heldout_l1_after_start"] for r in ok])[0],
                 wall_mean_s=_mean_std([r["process_wall_s"] for r in ok])[0])
    out.append(row)
  return out
