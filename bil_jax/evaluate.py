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
(:meth:`bil_jax.eval_programs.Programs.task_outputs`), compiled as two programs: Aux
fine-tuning, shared with tuning, then the rows. The per-task rows are gathered on
every process; process 0 writes the files.

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
import logging
import os
import time
from typing import Dict, List

import jax
import ml_collections
import numpy as np
from clu import periodic_actions

from bil_jax import (builders, checkpoint, console, eval_programs, eval_store, parallel, report,
                     rows, streams, tuning, visualize)
from bil_jax import xplus as xplus_lib
from bil_jax.data import episodes, loading
from bil_jax.data import tasks as tasks_lib
from bil_jax.eval_inputs import task_inputs, test_episodes

ROW_IDS = eval_programs.ROW_IDS
GRID_COLUMNS = ("map", "target") + ROW_IDS


def tune_on_validation(config, progs: eval_programs.Programs, params, consts, train_tasks,
                       val_tasks, store: eval_store.TaskStore) -> dict:
  """Tuned fine-tuning (:mod:`bil_jax.tuning`): every tuned row's grid scored on the
  validation tasks by ``progs.run_val``; returns the ``"tuning"`` record of results.json.
  The validation tasks ``store`` holds are read back; each new one is saved there."""
  sampler = episodes.Sampler.from_config(config.data)
  eps = test_episodes(config, val_tasks, tuning.num_val(config, val_tasks), streams.VAL_TASK_OFFSET)

  def compute(todo):
    inputs = lambda t: task_inputs(config, sampler, train_tasks, eps[t], streams.VAL_TASK_OFFSET +
                                   t, ablations=False)
    for t, out in eval_programs.run_tasks(progs.run_val, progs.mesh, params, consts, inputs, todo):
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
  t0 = time.time()
  data = loading.load_data(config, workdir)
  train_tasks = data.train
  spec = builders.build_spec(config, train_tasks.num_classes)
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
  params, consts = parallel.replicate(mesh, (host_params, eval_programs.host_consts(config)))
  progs = eval_programs.Programs(config, spec, mesh)
  tuned = tune_on_validation(config, progs, params, consts, train_tasks, data.val,
                             store=stores["tuning"])
  settings = {r: (c["is_lr"], c["is_steps"]) for r, c in tuned["chosen"].items()}
  settings = eval_programs.settings_inputs(progs.grid, settings)
  consts = dict(consts, settings=parallel.replicate(mesh, settings))
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
  compute = lambda todo: eval_programs.run_tasks(progs.run, mesh, params, consts, inputs, todo)

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
      shown = {k: v[:eval_programs.GRID_QUERIES] for k, v in query.items()}
      grid_cols["map"].append(visualize.colorize(shown["map"], spec.num_classes))
      grid_cols["target"].append(shown["image"])
      grid_rows += [test_tasks.names[t]] * len(shown["image"])
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
