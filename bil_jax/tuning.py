"""Tuned fine-tuning: the IS learning rate and step count of every n-shot row, chosen on
validation tasks from one grid shared by all rows (host side; the scores come from
:mod:`bil_jax.evaluate`).

The grid is ``eval.tune_is_lrs`` x ``eval.tune_is_steps`` (an empty list: the config's
``meta.inner_optimizer.lr`` / ``eval.is_steps`` alone). Each tuned row (:data:`TUNED_ROWS`)
is scored on the validation tasks at every grid point: one adaptation of
max(steps) steps per learning rate, its query images scored after each listed step count
(the images after s steps equal an s-step adaptation's). The choice maximises the mean
over validation tasks of the query SSIM (the primary metric); ties go to the first grid
point (learning rates, then step counts, in the listed order). The Aux ablations take
BiL's choice (:data:`FOLLOWS`).
"""
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

TUNED_ROWS = ("x_nshot", "xplus_nshot", "bil_noaux", "bil")
FOLLOWS = {"bil_aux_random": "bil", "bil_aux_merged": "bil"}
BASELINES = ("x_nshot", "xplus_nshot")


def grid(config) -> Tuple[Tuple[float, ...], Tuple[int, ...]]:
  """(learning rates, increasing distinct step counts) of the tuning grid; a one-line
  error for a step count < 1 or a learning rate <= 0."""
  lrs = tuple(float(v) for v in config.eval.tune_is_lrs) or (float(config.meta.inner_optimizer.lr),)
  steps = tuple(sorted({int(v) for v in config.eval.tune_is_steps})) or (int(config.eval.is_steps),)
  if min(steps) < 1:
    raise ValueError(f"eval.tune_is_steps={tuple(config.eval.tune_is_steps)} (or "
                     f"eval.is_steps={config.eval.is_steps}): step counts must be >= 1")
  if min(lrs) <= 0:
    raise ValueError(f"eval.tune_is_lrs={lrs}: learning rates must be > 0")
  return lrs, steps


def num_val(config, val_tasks) -> int:
  """How many validation tasks score the grids: ``eval.num_val_tasks`` (-1: all)."""
  n = val_tasks.num_tasks
  if n < 1:
    raise ValueError("the validation split has no tasks: tuning needs at least one")
  k = int(config.eval.num_val_tasks)
  return n if k < 0 else min(k, n)


def choose(scores: Dict[str, np.ndarray], lrs: Sequence[float],
           steps: Sequence[int]) -> Dict[str, dict]:
  """{row: SSIM [V, L, S] (validation task, lr, step count)} -> {row: {'is_lr',
  'is_steps', 'val_ssim'}}: the grid point of the highest mean SSIM over tasks (ties: the
  first in lr-major order); rows of :data:`FOLLOWS` copy their leader's choice."""
  chosen = {}
  for row, s in scores.items():
    mean = np.asarray(s, np.float64).mean(axis=0)
    if mean.shape != (len(lrs), len(steps)):
      raise ValueError(f"tuning scores of {row!r} have shape {mean.shape}, want "
                       f"({len(lrs)}, {len(steps)})")
    li, si = np.unravel_index(int(np.argmax(mean)), mean.shape)  # first maximum
    chosen[row] = {
        "is_lr": float(lrs[li]), "is_steps": int(steps[si]), "val_ssim": float(mean[li, si])
    }
  for row, leader in FOLLOWS.items():
    if leader in chosen:
      chosen[row] = dict(chosen[leader], follows=leader)
  return chosen


def grid_end(values: Sequence[float], value: float) -> Optional[str]:
  """'highest' or 'lowest' when ``value`` is that end of ``values`` (a grid of more than one
  distinct value), else None: a choice on an end may be cut short by the grid, a wider one
  could score higher on validation."""
  if len(set(values)) < 2:
    return None
  if value == max(values):
    return "highest"
  return "lowest" if value == min(values) else None


# Each tuned axis: its key in a choice and the name of each of its ends.
EDGES = (("is_steps", {"highest": "most steps", "lowest": "fewest steps"}),
         ("is_lr", {"highest": "highest lr", "lowest": "lowest lr"}))


def edges(record: dict) -> Dict[str, List[tuple]]:
  """{tuned row: [(edge name of :data:`EDGES`, the chosen value)]} of a ``"tuning"`` record:
  the ends of the grid (:func:`grid_end`) each choice lies on, steps first (an axis of one
  value has none; rows that follow another's choice are left out)."""
  grid = record["grid"]
  out = {}
  for row, c in record["chosen"].items():
    if "follows" in c:
      continue
    ends = [(names, c[key], grid_end(grid[key], c[key])) for key, names in EDGES]
    found = [(names[end], value) for names, value, end in ends if end]
    if found:
      out[row] = found
  return out


def strongest_baseline(chosen: Dict[str, dict]) -> str:
  """The n-shot baseline (of :data:`BASELINES`) with the higher validation SSIM (ties:
  the first)."""
  return max(BASELINES, key=lambda r: (chosen[r]["val_ssim"], -BASELINES.index(r)))


def record(lrs, steps, chosen: Dict[str, dict], scores: Dict[str, np.ndarray],
           val_names: List[str]) -> dict:
  """The ``"tuning"`` entry of results.json: the grid, the choices, every grid point's
  mean validation SSIM ({row: [L][S]}) and the validation tasks."""
  return {
      "grid": {"is_lr": list(lrs), "is_steps": list(steps)}, "chosen": chosen,
      "val_ssim": {r: np.asarray(s, np.float64).mean(axis=0).tolist() for r, s in scores.items()},
      "val_tasks": list(val_names)
  }
