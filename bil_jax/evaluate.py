"""Test phase (Alg. 2), the paper's ablation rows (Tables 1-3), the baselines and the sanity rows.

For every test (unseen) task T_uns with support set T_uns^(tr) (n shots) and query set
T_uns^(te) (``data.eval_queries`` pairs), each row generates the query images. Shots and
queries are the task's raw pairs (``eval.augment_shots=True`` augments the shots as in
training); Eq. 3 retrieval and the lookups use the raw shots.

  X                        the conventional model (pre-training checkpoint), no adaptation
  X (n-shot)               X after IS adaptation on the n shots
  X+ / X+ (n-shot)         X trained on for meta-training's pair-gradients (bil_jax.xplus)
  BiL-X w/o Aux (n-shot)   the meta-trained GP after IS adaptation on the n shots
  BiL-X (n-shot)           the GP fine-tuned on the K auxiliary tasks retrieved by Eq. 3
                           (Alg. 2 lines 2-4), then IS adaptation on the n shots
  Aux on random tasks      as BiL-X (n-shot), Aux on K random training tasks
  Aux pairs merged into IS the GP adapted on the shots plus n pairs of each retrieved task
                           (Sec. 3.2's alternative to Aux), no Aux fine-tuning
  BiL-X (GP)               the meta-trained GP, no adaptation
  lookups                  label-mean, label x pixel, nearest shot (bil_jax.lookups)

IS adaptation uses the inner optimizer of ``config.meta``; every n-shot row's learning rate
and step count are chosen on validation tasks before the test tasks are read
(:mod:`bil_jax.tuning`; the Aux ablations take BiL's). Aux fine-tuning runs
``eval.aux_steps`` meta-steps (Alg. 1 lines 6-22) whose meta-batch is the K auxiliary
tasks, starting from the GP with a fresh outer Adam.

Parallel: the tasks are spread over every device of every process (a 1-D mesh,
``jax.shard_map``), one task per device at a time, the list padded to a multiple of the
device count by repeating the last task (its rows are dropped). Per task, the host does
Eq. 3 retrieval, samples the Aux meta-batches and computes the lookups
(:func:`bil_jax.eval_inputs.task_inputs`, from the task's own random streams, so the
device count changes nothing); the device runs the rest as one pure function
(:meth:`_Programs.task_outputs`). The per-task rows are gathered on every process;
process 0 writes the files.

Metrics (``bil_jax.metrics``): SSIM and PSNR on images mapped to [0, 1], MSE on [-1, 1],
LPIPS (AlexNet, v0.1) on [-1, 1] when ``eval.lpips_weights`` is set, else ``null`` /
``n/a``. Each is averaged over the query pairs of a task, then over tasks.

Outputs in ``WORKDIR/eval/``: ``results.json`` with
``"rows"`` (``{name: {"lpips", "ssim", "mse", "psnr"}}``, means over tasks),
``"per_task"`` (``{name: {metric: [value per test task]}}``, in the order of ``"task_names"``),
``"task_conditions"`` ('seen' | 'unseen' | 'all' per test task), ``"row_ids"`` (``{row id
of bil_jax.rows: name}``), ``"tuning"`` (grid, choices and validation scores),
``"strongest_baseline"`` (the n-shot baseline better on validation), ``"pair_gradients"``
(per phase), ``"xplus_lr"``, ``"summary"`` (:func:`bil_jax.results.summarize`) and
``"config"``; ``results.md`` and TensorBoard output (:func:`bil_jax.report.write_run`);
``samples.png`` (Fig. 3 layout). While it runs, ``partial/`` holds each finished
validation and test task (:mod:`bil_jax.eval_store`): an interrupted evaluation resumes
from them and ends with the same results; the folder is removed once results.json is written.
``python -m bil_jax.report DIR ...`` pools several seeds.
"""
import functools
import logging
import os
import time
from typing import Dict, List, Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from clu import periodic_actions
from jax.sharding import PartitionSpec as P

from bil_jax import (adapt, builders, checkpoint, console, estimators, gan, lookups, meta, metrics,
                     parallel, report, rows, streams, tuning, visualize)
from bil_jax import eval_store
from bil_jax import xplus as xplus_lib
from bil_jax.data import episodes, loading
from bil_jax.data import tasks as tasks_lib
from bil_jax.eval_inputs import padded_positions, stack_tasks, task_inputs, test_episodes

ROW_IDS = rows.ROW_IDS  # every row of the table, computed by task_outputs in this order
GRID_COLUMNS = ("map", "target") + ROW_IDS
GRID_QUERIES = 2  # query images per task in the sample grid
# The rows adapted on the shots from one stacked program, and the parameters each starts
# from ('aux': the GP after Aux fine-tuning on the retrieved tasks, 'aux_random': on
# random ones).
IS_ROWS = ("x_nshot", "xplus_nshot", "bil_noaux", "bil", "bil_aux_random")
STARTS = {
    "x_nshot": "x", "xplus_nshot": "xplus", "bil_noaux": "gp", "bil": "aux",
    "bil_aux_random": "aux_random"
}


def gather_rows(tree):
  """Task-sharded global arrays [T, ...] -> host numpy [T, ...] with every row, on every
  process."""
  if jax.process_count() == 1:
    return jax.tree.map(np.asarray, tree)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return multihost_utils.process_allgather(tree, tiled=True)


class _Programs:
  """Alg. 2 on one task as pure functions, and their task-parallel compiled programs.

  ``run(params, consts, tasks)`` (test, :meth:`task_outputs`) and ``run_val(params,
  consts, tasks)`` (tuning, :meth:`val_scores`): ``tasks`` are :func:`task_inputs` with a
  leading task axis [T], sharded over the devices of ``mesh`` (default: every device of
  every process); ``params = {'x', 'xplus', 'gp'}`` and ``consts = {'frozen', 'lpips'}``
  are replicated. Each device runs the per-task function on its own tasks (``lax.map``);
  nothing is communicated, the outputs stay sharded over tasks.

  ``settings``: {row: (IS lr, IS steps)} of every n-shot row (IS_ROWS and
  'bil_aux_merged'), needed by ``run``; ``run_val`` scores the grid of
  :func:`bil_jax.tuning.grid`.
  """

  def __init__(self, config, spec, settings: Optional[Dict[str, tuple]] = None, mesh=None):
    self.config, self.spec, self.settings = config, spec, settings
    self.grid = tuning.grid(config)
    # Aux fine-tuning uses meta.estimator (with its options) unless eval.aux_estimator
    # names another one.
    name = config.eval.aux_estimator or config.meta.estimator
    options = "" if config.eval.aux_estimator else config.meta.estimator_options
    self.aux_estimator = functools.partial(estimators.resolve(name, options),
                                           builders.inner_loop(config, spec))
    self.aux_opt = optax.with_extra_args_support(builders.aux_optimizer(config))
    self.mesh = parallel.make_mesh() if mesh is None else mesh
    self.run = self._sharded(self.task_outputs)
    self.run_val = self._sharded(self.val_scores)

  def _sharded(self, per_task):

    def local(params, consts, tasks):
      # The device's tasks one after another: the memory of one task, and the same
      # (unbatched) convolutions as on one device.
      return jax.lax.map(lambda task: per_task(params, consts, task), tasks)

    # No collectives: every device adapts its own tasks, and every output is per task.
    # (With check_vma off, gradients inside the body are each device's own: JAX does not
    # sum the cotangents of the replicated parameters over devices.)
    return jax.jit(
        jax.shard_map(local, mesh=self.mesh, in_specs=(P(), P(), parallel.TASK_SPEC),
                      out_specs=parallel.TASK_SPEC, check_vma=False))

  def aux_finetune(self, params, batches, rngs, frozen):
    """Alg. 2 lines 2-4: S alternating BiL meta-steps of the GP on the K auxiliary tasks,
    from a fresh Aux optimizer. batches: Episodes, leaves [S, K, ...]; rngs [S, K, 2]."""

    def meta_step(carry, step_inputs):
      p, opt_state, _ = meta.meta_update(self.aux_estimator, self.aux_opt, *carry, *step_inputs,
                                         frozen)
      return (p, opt_state), None

    (params, _), _ = jax.lax.scan(meta_step, (params, self.aux_opt.init(params)), (batches, rngs))
    return params

  def adapt_at(self, params, lr, support, query, rng, frozen, step_counts, post=None):
    """:func:`bil_jax.adapt.adapt_at` with the IS optimizer of ``config.meta`` at ``lr``."""
    loop = builders.inner_loop(self.config, self.spec, steps=max(step_counts), lr=lr)
    return adapt.adapt_at(loop, params, support, query, rng, frozen, step_counts, post)

  def adapt_many(self, starts, lrs, support, query, rng, frozen, step_counts, post=None):
    """:func:`adapt_at` of each start (a list of parameters) at its lr: [len(starts), ...].
    Starts of one tree structure share one compiled adaptation (``lax.map``)."""
    groups = {}
    for i, p in enumerate(starts):
      groups.setdefault(jax.tree.structure(p), []).append(i)
    out = [None] * len(starts)
    for idx in groups.values():
      stacked = jax.tree.map(lambda *a: jnp.stack(a), *[starts[i] for i in idx])
      res = jax.lax.map(
          lambda a: self.adapt_at(a[0], a[1], support, query, rng, frozen, step_counts, post),
          (stacked, jnp.asarray([lrs[i] for i in idx], jnp.float32)))
      for j, i in enumerate(idx):
        out[i] = jax.tree.map(lambda r: r[j], res)  # pylint: disable=cell-var-from-loop
    return jnp.stack(out)

  def generate(self, params, query):
    """The query images [q,H,W,3] of ``params`` without adaptation (no dropout)."""
    return gan.generate(self.spec, params["G"], query, jax.random.PRNGKey(0), train=False)

  def val_scores(self, params, consts, task):
    """Query SSIM [R, L, S] of the tuned rows (R = tuning.TUNED_ROWS, their order) after
    IS adaptation at each grid learning rate L and step count S on one validation task."""
    lrs, steps = self.grid
    frozen, query = consts["frozen"], task["query"]
    start = dict(params, aux=self.aux_finetune(params["gp"], task["aux"], task["aux_rngs"], frozen))
    starts = [start[STARTS[r]] for r in tuning.TUNED_ROWS for _ in lrs]
    ssim = lambda f: jax.vmap(lambda x: metrics.ssim(x, query["image"]).mean())(f)  # pylint: disable=unnecessary-lambda-assignment
    scores = self.adapt_many(starts,
                             list(lrs) * len(tuning.TUNED_ROWS), task["support"], query,
                             task["rng"], frozen, steps, post=ssim)
    return scores.reshape(len(tuning.TUNED_ROWS), len(lrs), len(steps))

  def task_outputs(self, params, consts, task):
    """Alg. 2 and the table's other rows on one test task (:func:`task_inputs`); pure.

    X, X+ and GP generate directly; the IS rows adapt their start (STARTS) on the shots at
    their own (lr, steps) of ``settings``; BiL's start is the GP after Aux fine-tuning on
    the retrieved tasks, the random-Aux ablation's after Aux fine-tuning on random ones;
    the merged ablation adapts the GP on the shots plus the 'merged' pairs; the lookups
    come with the task.

    Returns:
      'scores': {metric: [R, q]}, each row's per-query metrics (rows R in ROW_IDS order);
      'grid': [R, g, H, W, 3], each row's first g = min(2, q) query images;
      'aux_tasks', 'aux_random_tasks': int32 [K], passed through (gathered with the rows).
    """
    frozen, support, query, rng = consts["frozen"], task["support"], task["query"], task["rng"]
    start = dict(
        params, aux=self.aux_finetune(params["gp"], task["aux"], task["aux_rngs"], frozen),
        aux_random=self.aux_finetune(params["gp"], task["aux_random"], task["aux_rngs"], frozen))
    steps = tuple(sorted({s for _, s in self.settings.values()}))
    adapted = self.adapt_many([start[STARTS[r]] for r in IS_ROWS],
                              [self.settings[r][0] for r in IS_ROWS], support, query, rng, frozen,
                              steps)
    fakes = {r: adapted[i, steps.index(self.settings[r][1])] for i, r in enumerate(IS_ROWS)}
    lr, n = self.settings["bil_aux_merged"]
    merged = jax.tree.map(lambda a, b: jnp.concatenate([a, b.astype(a.dtype)]), support,
                          {k: task["merged"][k] for k in support})
    fakes["bil_aux_merged"] = self.adapt_at(params["gp"], lr, merged, query, rng, frozen, (n,))[0]
    fakes.update({k: self.generate(params[k], query) for k in ("x", "xplus", "gp")})
    fakes.update(zip(lookups.PREDICTORS, task["lookups"]))
    fakes = jnp.stack([fakes[k] for k in ROW_IDS])
    scores = jax.lax.map(lambda f: metrics.image_metrics(f, query["image"], consts["lpips"]), fakes)
    return {
        "scores": scores, "grid": fakes[:, :GRID_QUERIES], "aux_tasks": task["aux_tasks"],
        "aux_random_tasks": task["aux_random_tasks"]
    }


def run_tasks(program, mesh, params, consts, inputs, todo: Sequence[int]):
  """Yields (t, outputs of task t) for each t of ``todo``, in its order: ``program`` (a
  ``_Programs`` run) on every device, one task per device at a time (the list padded by
  repeating its last task); each process makes only its own tasks' ``inputs(t)``; outputs
  are gathered."""
  todo = np.asarray(todo, np.int64)
  num_devices = mesh.devices.size
  positions = todo[padded_positions(len(todo), num_devices)]
  local = parallel.local_task_slice(num_devices)
  for start in range(0, len(positions), num_devices):
    chunk = positions[start:start + num_devices]
    tasks = stack_tasks([inputs(int(t)) for t in chunk[local]])
    done = gather_rows(program(params, consts, parallel.shard_tasks(mesh, tasks)))
    for i in range(min(num_devices, len(todo) - start)):
      yield int(chunk[i]), jax.tree.map(lambda a: a[i], done)  # pylint: disable=cell-var-from-loop


def tune_on_validation(config, spec, params, consts, train_tasks, val_tasks,
                       store: eval_store.TaskStore) -> dict:
  """Tuned fine-tuning (:mod:`bil_jax.tuning`): every tuned row's grid scored on the
  validation tasks; returns the ``"tuning"`` record of results.json. The validation tasks
  ``store`` holds are read back; each new one is saved there."""
  progs = _Programs(config, spec)
  sampler = episodes.Sampler.from_config(config.data)
  eps = test_episodes(config, val_tasks, tuning.num_val(config, val_tasks), streams.VAL_TASK_OFFSET)

  def compute(todo):
    inputs = lambda t: task_inputs(config, sampler, train_tasks, eps[t], streams.VAL_TASK_OFFSET +
                                   t, ablations=False)
    for t, out in run_tasks(progs.run_val, progs.mesh, params, consts, inputs, todo):
      yield t, {"val_ssim": out}

  per_task = []
  for t, out, fresh in eval_store.resume(store, len(eps), compute, what="validation tasks"):
    per_task.append(out["val_ssim"])
    if fresh:
      logging.info("tuning: validation task %d/%d (%s)", t + 1, len(eps), val_tasks.names[t])
  scores = np.stack(per_task)  # [V, R, L, S]
  lrs, steps = progs.grid
  by_row = {r: scores[:, i] for i, r in enumerate(tuning.TUNED_ROWS)}
  chosen = tuning.choose(by_row, lrs, steps)
  logging.info("tuned IS settings (lr, steps): %s",
               {r: (c["is_lr"], c["is_steps"]) for r, c in chosen.items()})
  return tuning.record(lrs, steps, chosen, by_row, val_tasks.names[:len(eps)])


def _mean_rows(per_task: Dict[str, List[dict]]) -> Dict[str, dict]:
  """Averages per-task metric dicts; 'lpips' is None when it was not computed."""
  means = {}
  for name, scores in per_task.items():
    means[name] = {
        k: (float(np.mean([s[k] for s in scores])) if k in scores[0] else None)
        for k in rows.METRIC_KEYS
    }
  return means


def per_task_values(per_task: Dict[str, List[dict]]) -> Dict[str, Dict[str, List[float]]]:
  """{row: [metrics of task t]} -> {row: {metric: [value per task, in task order]}}."""
  return {
      name: {k: [s[k] for s in scores] for k in rows.METRIC_KEYS if k in scores[0]}
      for name, scores in per_task.items()
  }


def evaluate(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, dict]:
  """Tunes the n-shot rows on validation, runs Alg. 2 on the test tasks and writes the
  table; returns its rows.

  The IS settings are chosen (:func:`tune_on_validation`) before the test tasks are read.
  The tasks are spread over every device of every process, one task per device at a time
  (the task list padded to a multiple of the device count by repeating the last task).
  Each process samples only its own tasks' Aux meta-batches; the per-task rows are
  gathered on every process, and process 0 writes the files.
  """
  from bil_jax.models import lpips as lpips_lib  # pylint: disable=g-import-not-at-top
  t0 = time.time()
  data = loading.load_data(config, workdir)
  train_tasks = data.train
  spec = builders.build_spec(config, train_tasks.num_classes)
  lpips_params = (lpips_lib.load_lpips_params(config.eval.lpips_weights)
                  if config.eval.lpips_weights else None)
  mesh = parallel.make_mesh()
  host_params = {
      k: checkpoint.phase_params(workdir, phase)
      for k, phase in (("x", "pretrain"), ("xplus", "xplus"), ("gp", "meta"))
  }
  out = os.path.join(workdir, "eval")
  stamp = eval_store.fingerprint(config.to_dict(), host_params)
  stores = {
      p: eval_store.TaskStore(os.path.join(out, eval_store.PARTIAL_DIR, p), stamp)
      for p in ("tuning", "test")
  }
  params, consts = parallel.replicate(
      mesh, (host_params, {"frozen": builders.load_frozen(config), "lpips": lpips_params}))
  tuned = tune_on_validation(config, spec, params, consts, train_tasks, data.val,
                             store=stores["tuning"])
  settings = {r: (c["is_lr"], c["is_steps"]) for r, c in tuned["chosen"].items()}
  progs = _Programs(config, spec, settings, mesh)
  names = rows.row_names(config.model.name, config.data.shots)
  test_tasks = data.test
  eps = test_episodes(config, test_tasks)
  sampler = episodes.Sampler.from_config(config.data)

  progress = periodic_actions.ReportProgress(num_train_steps=len(eps), every_steps=1,
                                             every_secs=None)
  logging.info(
      "test phase: %d test tasks on %d devices (%d processes), IS settings tuned "
      "on validation, %d Aux steps on %d retrieved tasks; compiling its programs "
      "(first run: about a minute; cached after)", len(eps), mesh.devices.size, jax.process_count(),
      config.eval.aux_steps, config.eval.aux_tasks)
  per_task = {name: [] for name in names.values()}
  t_first, first = None, 0  # when and at which task the first computed task ended
  grid_cols = {k: [] for k in GRID_COLUMNS}
  grid_rows = []  # the task name of each grid row
  aux_log = []
  inputs = lambda t: task_inputs(config, sampler, train_tasks, eps[t], t)
  compute = lambda todo: run_tasks(progs.run, mesh, params, consts, inputs, todo)

  def keep(t, done):  # what a rerun needs: the sample grid only of the grid's tasks
    return done if t < config.eval.grid_tasks else {k: v for k, v in done.items() if k != "grid"}

  for t, done, fresh in eval_store.resume(stores["test"], len(eps), compute, keep, "test tasks"):
    aux_log.append({
        "task": test_tasks.names[t], "aux_tasks": [train_tasks.names[a] for a in done["aux_tasks"]],
        "aux_random_tasks": [train_tasks.names[a] for a in done["aux_random_tasks"]]
    })
    for r, key in enumerate(ROW_IDS):
      per_task[names[key]].append({k: float(np.mean(v[r])) for k, v in done["scores"].items()})
    if t < config.eval.grid_tasks:
      query = eps[t]["query"]
      for r, key in enumerate(ROW_IDS):
        grid_cols[key].append(done["grid"][r])
      grid_cols["map"].append(visualize.colorize(query["map"][:GRID_QUERIES], spec.num_classes))
      grid_cols["target"].append(query["image"][:GRID_QUERIES])
      grid_rows += [test_tasks.names[t]] * len(query["image"][:GRID_QUERIES])
    if fresh:
      t_first, first = (t_first, first) if t_first else (time.time(), t)
      logging.info(
          "evaluated %s (%s)",
          console.progress(t + 1, len(eps), first,
                           time.time() - t_first, "test task", mesh.devices.size),
          test_tasks.names[t])
    progress(t + 1)

  means = _mean_rows(per_task)
  task_names = list(test_tasks.names[:len(eps)])
  result = {
      "rows": means, "per_task": per_task_values(per_task), "task_names": task_names,
      "task_conditions": [tasks_lib.task_condition(n) for n in task_names
                         ], "row_ids": dict(names), "config": config.to_dict(), "tuning": tuned,
      "strongest_baseline": tuning.strongest_baseline(tuned["chosen"]),
      "pair_gradients": xplus_lib.pair_gradients(config), "xplus_lr": xplus_lib.trained_lr(workdir),
      "num_test_tasks": len(eps), "queries_per_task": int(config.data.eval_queries),
      "seed": int(config.seed), "aux_retrieval": aux_log, "seconds": time.time() - t0
  }
  samples = None
  if grid_cols["map"]:
    labels = {"map": "map", "target": "target", **names}
    samples = visualize.labeled_grid([np.concatenate(grid_cols[k]) for k in GRID_COLUMNS],
                                     [labels[k] for k in GRID_COLUMNS], min_width=96, pad=4,
                                     row_labels=grid_rows)
  # Every process gathered the same rows; process 0 writes the files.
  table = report.write_run(out, result, config, write_files=parallel.is_main_process(),
                           images={} if samples is None else {"samples": samples[None]})
  if parallel.is_main_process() and samples is not None:
    visualize.save_png(os.path.join(out, "samples.png"), samples)
  eval_store.clear(out)  # results.json is written: the finished tasks are not needed
  logging.info("results (%d test tasks):\n%s", len(eps), table)
  return means
