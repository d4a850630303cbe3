"""X+, the compute-matched baseline: conventional training continued from the pre-training
checkpoint for as many pair-gradients as meta-training uses, on the same training tasks.

Pair-gradients (:func:`pair_gradients`). A pair-gradient is one pair's GAN loss
differentiated once with respect to G and D: one forward and backward pass of both
networks on one pair (every GAN step, :func:`bil_jax.gan.gan_step`, updates D then G on
the same pairs, in pre-training and in the IS steps alike). Counted per phase:

  pre-training       a step of batch B: B;
  meta-training      a meta-step: meta_batch x (K x shots + queries), K = meta.inner_steps
                     inner GAN steps on the n shots and one query-set gradient per task,
                     whatever the estimator. Second order is counted the same: its backward
                     pass through the K inner steps (Hessian-vector products) re-visits the
                     same pairs and is not counted again; the count measures the data the
                     model learns from, not FLOPs (a second-order step costs several
                     first-order ones). Extra evaluations of an estimator (es perturbations,
                     implicit's conjugate-gradient products) are not counted either;
  X+                 its steps x B, with steps = ceil(meta / B) at B = pretrain.batch_size;
  Aux (test phase)   per test task: aux_steps x aux_tasks x (K x shots + queries), the
                     same meta-steps on the retrieved tasks; not training, not matched;
  IS (test phase)    per test task and n-shot row: is_steps x shots (the merged-Aux
                     ablation: is_steps x shots x (1 + aux_tasks)).

X+ uses the pre-training optimizer (fresh state, as meta-training's outer optimizer) at
learning rate :func:`chosen_lr`, pre-training's batch size, and its own episode and key
streams ('xplus'), so its batches are new draws of the training pairs. ``--mode=tune``
(:func:`tune`) trains one X+ per ``xplus.lr_grid`` value into ``WORKDIR/xplus_lr<i>/``,
scores each X+ (n-shot) on the validation tasks (SSIM after ``eval.is_steps`` IS steps at
``meta.inner_optimizer.lr``) and writes the choice to ``WORKDIR/xplus_tuning.json``;
``--mode=xplus`` (and ``all``) trains ``WORKDIR/xplus/`` at the chosen rate, or, when the
rate is the tuning's choice and its run finished :func:`xplus_steps` steps, copies that
run's checkpoints (:func:`tuned_run`): X+ is then the very model whose validation score
chose the rate, and is not trained twice.
"""
import copy
import dataclasses
import json
import logging
import math
import os
import shutil
from typing import List, Optional, Tuple

import jax
import ml_collections
import numpy as np

from bil_jax import (adapt, builders, checkpoint, eval_inputs, gan, io_utils, loop, metrics,
                     nonfinite, parallel, streams, train, tuning)
from bil_jax.data import loading

TUNING_FILE = "xplus_tuning.json"
LR_FILE = "lr.json"


def meta_step_pairs(config: ml_collections.ConfigDict) -> int:
  """Pair-gradients of one meta-step per task: K x shots + queries."""
  return (int(config.meta.inner_steps) * int(config.data.shots) + int(config.data.queries))


def xplus_steps(config: ml_collections.ConfigDict) -> int:
  """X+ steps at batch pretrain.batch_size: ceil(meta-training pair-gradients / B)."""
  meta = int(config.meta.steps) * int(config.meta.meta_batch) * meta_step_pairs(config)
  return math.ceil(meta / int(config.pretrain.batch_size))


def pair_gradients(config: ml_collections.ConfigDict) -> dict:
  """{'pretrain', 'meta', 'xplus', 'aux_per_test_task', 'is_per_test_task'}: the
  pair-gradients of each phase as the module docstring counts them."""
  batch = int(config.pretrain.batch_size)
  return {
      "pretrain": int(config.pretrain.steps) * batch,
      "meta": int(config.meta.steps) * int(config.meta.meta_batch) * meta_step_pairs(config),
      "xplus": xplus_steps(config) * batch, "aux_per_test_task":
          (max(int(config.eval.aux_steps), 0) * int(config.eval.aux_tasks) * meta_step_pairs(config)
          ), "is_per_test_task": int(config.eval.is_steps) * int(config.data.shots)
  }


def _schedule(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  p = config.pretrain
  return ml_collections.ConfigDict(
      dict(steps=xplus_steps(config), log_every=int(p.log_every),
           checkpoint_every=int(p.checkpoint_every), image_every=int(p.image_every)))


def xplus_phase(config: ml_collections.ConfigDict, train_tasks, val_tasks, spec: gan.GanSpec,
                frozen, start_params: dict, lr: float,
                tune_index: Optional[int] = None) -> loop.Phase:
  """The X+ phase: pre-training's step and probe on the 'xplus' streams, from
  ``start_params`` with a fresh pre-training optimizer at learning rate ``lr``, for
  :func:`xplus_steps` steps. Outputs in ``WORKDIR/xplus/``, or for run ``tune_index`` of
  ``--mode=tune`` in ``WORKDIR/xplus_lr<tune_index>/``."""
  c = copy.deepcopy(config)
  c.optim.lr = float(lr)
  start_params = jax.tree.map(np.asarray, start_params)  # host copies: the steps donate theirs
  base = train.pretrain_phase(c, train_tasks, val_tasks, spec, frozen, params=start_params,
                              stream="xplus")
  opt = nonfinite.skip_nonfinite(builders.pretrain_optimizer(c))
  # Step ids grow across the phases of a run: the tune runs, then X+, after meta-training.
  index = len(config.xplus.lr_grid) if tune_index is None else int(tune_index)
  offset = int(config.pretrain.steps) + int(config.meta.steps) + index * xplus_steps(config)
  return dataclasses.replace(
      base, name="xplus" if tune_index is None else tune_run_name(tune_index),
      title=f"X+ training (lr {lr:g})", schedule=_schedule(config),
      initial_state=train.initial_state(start_params,
                                        gan.init_opt_state(opt, start_params)), step_offset=offset)


def chosen_lr(config: ml_collections.ConfigDict, workdir: str) -> Tuple[float, str]:
  """(X+ learning rate, where it came from): ``xplus.lr`` when >= 0, else the choice of
  ``--mode=tune`` in WORKDIR/xplus_tuning.json, else ``optim.lr``."""
  if config.xplus.lr >= 0:
    return float(config.xplus.lr), "xplus.lr"
  path = os.path.join(workdir, TUNING_FILE)
  if os.path.isfile(path):
    with open(path) as f:
      return float(json.load(f)["chosen_lr"]), path
  return float(config.optim.lr), "optim.lr"


def trained_lr(workdir: str) -> Optional[dict]:
  """{'lr', 'source'} of the X+ in WORKDIR/xplus (None if it has no record)."""
  path = os.path.join(workdir, "xplus", LR_FILE)
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    return json.load(f)


def val_ssim(config: ml_collections.ConfigDict, spec: gan.GanSpec, params: dict, val_tasks,
             frozen) -> float:
  """Mean query SSIM over the validation tasks of ``params`` after ``eval.is_steps`` IS
  steps at ``meta.inner_optimizer.lr``: how ``--mode=tune`` scores an X+ run."""
  eps = eval_inputs.test_episodes(config, val_tasks, tuning.num_val(config, val_tasks),
                                  streams.VAL_TASK_OFFSET)
  steps = int(config.eval.is_steps)
  inner = builders.inner_loop(config, spec, steps=steps)

  @jax.jit
  def one(p, support, query, rng):
    fake = adapt.adapt_at(inner, p, support, query, rng, frozen, (steps,))[0]
    return metrics.ssim(fake, query["image"]).mean()

  return float(
      np.mean([
          one(params, ep["support"], ep["query"],
              streams.key(config.seed, "eval", streams.VAL_TASK_OFFSET + t))
          for t, ep in enumerate(eps)
      ]))


def _start_params(workdir: str, params: Optional[dict]) -> dict:
  return params if params is not None else checkpoint.phase_params(workdir, "pretrain")


def _check_lr(workdir: str, lr: float) -> None:
  """One-line error when WORKDIR/xplus was trained at another learning rate."""
  path = os.path.join(workdir, "xplus", LR_FILE)
  if os.path.isfile(path):
    with open(path) as f:
      old = float(json.load(f)["lr"])
    if old != lr:
      raise ValueError(f"{path}: X+ was trained at lr {old:g} but the chosen lr is {lr:g}; "
                       f"delete {os.path.dirname(path)} to retrain it")


def tune_run_name(index: int) -> str:
  """The folder (and phase name) of ``--mode=tune``'s X+ run at grid rate ``index``."""
  return f"xplus_lr{index}"


def tuned_run(config: ml_collections.ConfigDict, workdir: str, lr: float) -> Optional[int]:
  """i of ``WORKDIR/xplus_lr<i>``, the ``--mode=tune`` run at ``lr`` (its index in the grid
  WORKDIR/xplus_tuning.json records), if its newest checkpoint is step
  :func:`xplus_steps`; else None (no tuning, another rate, or another step count, e.g.
  after ``meta.steps`` changed)."""
  path = os.path.join(workdir, TUNING_FILE)
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    grid = [float(v) for v in json.load(f).get("lr_grid", [])]
  if float(lr) not in grid:
    return None
  index = grid.index(float(lr))
  done = checkpoint.latest_step(os.path.join(workdir, tune_run_name(index), "checkpoints"))
  return index if done == xplus_steps(config) else None


def _reuse_tuned_run(config: ml_collections.ConfigDict, workdir: str, lr: float,
                     source: str) -> Optional[str]:
  """When ``lr`` is ``--mode=tune``'s choice (``source``, from :func:`chosen_lr`) and
  WORKDIR/xplus has no checkpoint yet, copies the checkpoints of :func:`tuned_run` into it
  (process 0; atomically: a partial copy is never taken for a checkpoint) and returns that
  run's folder name, ``xplus_lr<i>``; else None. Every process gets process 0's decision."""
  target = os.path.join(workdir, "xplus", "checkpoints")
  index = -1
  if parallel.is_main_process() and source == os.path.join(workdir, TUNING_FILE):
    if checkpoint.latest_step(target) is None:
      index = tuned_run(config, workdir, lr)
      index = -1 if index is None else index
    if index >= 0:
      partial = target + ".partial"
      shutil.rmtree(partial, ignore_errors=True)
      shutil.rmtree(target, ignore_errors=True)  # it holds no checkpoint
      shutil.copytree(os.path.join(workdir, tune_run_name(index), "checkpoints"), partial)
      os.replace(partial, target)
  index = int(parallel.broadcast_from_main([index])[0])
  parallel.barrier("xplus_reuse")
  return None if index < 0 else tune_run_name(index)


def xplus(config: ml_collections.ConfigDict, workdir: str, params: Optional[dict] = None) -> dict:
  """``--mode=xplus``: X+ from ``params`` (else the pre-training checkpoint) at
  :func:`chosen_lr`, or ``--mode=tune``'s finished run at that rate when the tuning chose it
  (:func:`_reuse_tuned_run`); returns its final {'G', 'D'}. The caller checks the workdir
  first."""
  data = loading.load_data(config, workdir, loading.TRAINING_SPLITS)
  spec = builders.build_spec(config, data.train.num_classes)
  lr, source = chosen_lr(config, workdir)
  _check_lr(workdir, lr)
  reused = _reuse_tuned_run(config, workdir, lr, source)
  if reused:
    logging.info(
        "X+: the --mode=tune run at lr %g (%s, %d steps of batch %d) is X+; not "
        "trained again", lr, reused, xplus_steps(config), int(config.pretrain.batch_size))
  else:
    logging.info("X+: %d steps of batch %d at lr %g (from %s)", xplus_steps(config),
                 int(config.pretrain.batch_size), lr, source)
  phase = xplus_phase(config, data.train, data.val, spec, builders.load_frozen(config),
                      _start_params(workdir, params), lr)
  if parallel.is_main_process():
    record = {"lr": lr, "source": source}
    if reused:
      record["copied_from"] = reused
    io_utils.write_json(os.path.join(workdir, "xplus", LR_FILE), record)
  return loop.run_phase(phase, config, workdir)


def choose(grid: List[float], scores: List[float]) -> Tuple[int, Optional[str]]:
  """(index of the best of ``scores`` over the rates ``grid`` (ties: the first), the end of
  the grid it lies on, from :func:`tuning.grid_end`: 'highest', 'lowest' or None)."""
  best = max(range(len(grid)), key=lambda i: (scores[i], -i))
  return best, tuning.grid_end(grid, grid[best])


def tune(config: ml_collections.ConfigDict, workdir: str, params: Optional[dict] = None) -> dict:
  """``--mode=tune``: one X+ per ``xplus.lr_grid`` value, each scored on the validation
  tasks (:func:`val_ssim`); writes and returns
  ``{'lr_grid', 'val_ssim', 'chosen_lr', 'edge', 'val_tasks'}`` (WORKDIR/xplus_tuning.json;
  'edge' from :func:`choose`, also logged as a warning)."""
  data = loading.load_data(config, workdir, loading.TRAINING_SPLITS)
  spec = builders.build_spec(config, data.train.num_classes)
  frozen = builders.load_frozen(config)
  start = _start_params(workdir, params)
  grid = [float(lr) for lr in config.xplus.lr_grid]
  if not grid:
    raise ValueError("xplus.lr_grid is empty: --mode=tune needs learning rates to compare")
  scores = []
  for i, lr in enumerate(grid):
    phase = xplus_phase(config, data.train, data.val, spec, frozen, start, lr, tune_index=i)
    trained = loop.run_phase(phase, config, workdir)
    scores.append(val_ssim(config, spec, trained, data.val, frozen))
    logging.info("X+ lr %g: validation SSIM of X+ (n-shot) %.4f", lr, scores[-1])
  best, edge = choose(grid, scores)
  if edge:
    logging.warning(
        "X+ lr %g is the %s rate of xplus.lr_grid %s: a wider grid might score "
        "higher on validation", grid[best], edge, grid)
  result = {
      "lr_grid": grid, "val_ssim": scores, "chosen_lr": grid[best], "edge": edge,
      "val_tasks": tuning.num_val(config, data.val)
  }
  if parallel.is_main_process():
    io_utils.write_json(os.path.join(workdir, TUNING_FILE), result)
  return result
