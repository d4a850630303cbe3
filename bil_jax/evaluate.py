"""Test phase (Alg. 2) and the paper's ablation table (Tables 1-3).

For every test (unseen) task T_uns with support set T_uns^(tr) (n shots) and query set
T_uns^(te) (``data.eval_queries`` pairs), five models generate the query images. Shots and
queries are the task's raw pairs (``eval.augment_shots=True`` augments the shots as in
training); Eq. 3 retrieval compares the raw support maps.

  X                        the conventional model (pre-training checkpoint), no adaptation
  X (n-shot)               X after IS adaptation on the n shots
  BiL-X w/o Aux (n-shot)   the meta-trained GP after IS adaptation on the n shots
  BiL-X (n-shot)           the GP fine-tuned on the K auxiliary tasks retrieved by Eq. 3
                           (Alg. 2 lines 2-4), then IS adaptation on the n shots
  BiL-X (GP)               the meta-trained GP, no adaptation

IS adaptation is ``eval.is_steps`` GAN updates (Sec. 5.3: 20) with the inner optimizer of
``config.meta``. Aux fine-tuning runs ``eval.aux_steps`` meta-steps (Alg. 1 lines 6-22)
whose meta-batch is the K auxiliary tasks, starting from the GP with a fresh outer Adam.

Parallel: the test tasks are spread over every device of every process (a 1-D mesh,
``jax.shard_map``), one task per device at a time, the list padded to a multiple of the
device count by repeating the last task (its rows are dropped). Per task, the host does
Eq. 3 retrieval and samples the Aux meta-batches (:func:`task_inputs`, from the task's own
random streams, so the device count changes nothing); the device runs the rest as one pure
function (:meth:`_Programs.task_outputs`). The per-task rows are gathered on every process;
process 0 writes the files.

Metrics (``bil_jax.metrics``): SSIM and PSNR on images mapped to [0, 1], MSE on [-1, 1],
LPIPS (AlexNet, v0.1) on [-1, 1] when ``eval.lpips_weights`` is set, else ``null`` /
``n/a``. Each is averaged over the query pairs of a task, then over tasks.

Outputs in ``WORKDIR/eval/``: ``results.json`` with
``"rows"`` (``{name: {"lpips", "ssim", "mse", "psnr"}}``, means over tasks),
``"per_task"`` (``{name: {metric: [value per test task]}}``, in the order of ``"task_names"``),
``"row_ids"`` (``{row id of bil_jax.rows: name}`` for the rows computed), ``"summary"``
(:func:`bil_jax.results.summarize`) and ``"config"``; ``results.md`` and TensorBoard output
(:func:`bil_jax.report.write_run`); ``samples.png`` (Fig. 3 layout).
``python -m bil_jax.report DIR ...`` pools several seeds.
"""
import functools
import logging
import os
import time
from typing import Dict, List

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from clu import periodic_actions
from jax.sharding import PartitionSpec as P

from bil_jax import (adapt, builders, checkpoint, console, estimators, gan, meta, metrics,
                     parallel, report, retrieval, rows, streams, visualize)
from bil_jax.data import episodes, loading

# The rows task_outputs computes, in rows.ROW_IDS order.
COMPUTED_ROWS = rows.in_table_order(("x", "x_nshot", "bil_noaux", "bil", "gp"))
GRID_COLUMNS = ("map", "target") + COMPUTED_ROWS
GRID_QUERIES = 2  # query images per task in the sample grid


def load_params(workdir: str, phase: str) -> dict:
  """{'G', 'D'} of the newest readable checkpoint of ``WORKDIR/phase``; one-line error if none."""
  return jax.tree.map(jnp.asarray, checkpoint.phase_params(workdir, phase))


def num_evaluated(config, test_tasks) -> int:
  """How many test tasks are evaluated: ``eval.num_test_tasks`` (-1: all of them)."""
  n = test_tasks.num_tasks
  return n if config.eval.num_test_tasks < 0 else min(config.eval.num_test_tasks, n)


def test_episodes(config, test_tasks) -> List[dict]:
  """One fixed episode per evaluated test task: n support shots, eval_queries queries.

  Queries are the task's raw pairs. So are the support shots, unless ``eval.augment_shots``
  (then flipped/cropped/rotated as in training). 'support_maps' int32 [n,H,W] are the raw
  support maps either way: Eq. 3 retrieval uses them. PG² references are made as in
  training (Sec. 5.3).
  """
  sampler = episodes.Sampler.from_config(config.data)
  eps = []
  for t in range(num_evaluated(config, test_tasks)):
    ep = sampler.eval_episode(test_tasks, t, streams.episode_rng(config.seed, "eval", t))
    # eval_episode draws the split first, so the same generator state gives its indices.
    sup, _ = sampler.eval_split(test_tasks, t, streams.episode_rng(config.seed, "eval", t))
    ep["support_maps"] = test_tasks.task_maps(t)[sup].astype(np.int32)
    if not config.eval.augment_shots:
      ep["support"] = dict(ep["support"], map=ep["support_maps"],
                           image=episodes.to_float(test_tasks.task_images(t)[sup]))
    eps.append(ep)
  return eps


def retrieve_aux_tasks(support_maps: np.ndarray, train_tasks, k: int) -> np.ndarray:
  """Eq. 3: the k training tasks most similar to the support maps [n,H,W], best first."""
  sims = retrieval.task_similarity(
      support_maps, train_tasks.maps,
      retrieval.task_ids_from_offsets(train_tasks.offsets), train_tasks.num_classes,
      num_tasks=train_tasks.num_tasks)
  return retrieval.top_k_tasks(sims, k)


def task_inputs(config, sampler, train_tasks, ep: dict, t: int) -> dict:
  """The host side of Alg. 2 for test task t (episode ``ep``): Eq. 3 retrieval and the
  Aux meta-batches, drawn from the streams of test task t.

  Returns (S = eval.aux_steps, K = eval.aux_tasks, n shots, q queries):
    'support', 'query': the episode's Pairs, leaves [n, ...] and [q, ...];
    'aux': S meta-batches of the K retrieved tasks, leaves [S, K, ...];
    'aux_rngs': uint32 [S, K, 2], the task keys of each Aux step;
    'rng': uint32 [2], the key of the IS adaptations;
    'aux_tasks': int32 [K], the retrieved training tasks, best first.
  """
  aux = retrieve_aux_tasks(ep["support_maps"], train_tasks, int(config.eval.aux_tasks))
  steps = max(int(config.eval.aux_steps), 0)
  key = streams.key(config.seed, "aux", t)
  batches, rngs = [], []
  for step in range(max(steps, 1)):  # one batch even for 0 steps: it gives the shapes
    batches.append(sampler.meta_batch(
        train_tasks, len(aux),
        streams.episode_rng(config.seed, "aux", streams.aux_step(t, step)),
        task_indices=list(aux)))
    rngs.append(np.asarray(meta.task_rngs(key, step, len(aux))))
  return {"support": ep["support"], "query": ep["query"],
          "aux": jax.tree.map(lambda *b: np.stack(b)[:steps], *batches),
          "aux_rngs": np.stack(rngs)[:steps],
          "rng": np.asarray(streams.key(config.seed, "eval", t)),
          "aux_tasks": aux.astype(np.int32)}


def stack_tasks(trees: List[dict]) -> dict:
  """Per-task pytrees (leaves [...]) -> one pytree with leaves [len(trees), ...]."""
  return jax.tree.map(lambda *xs: np.stack(xs), *trees)


def padded_positions(num_tasks: int, num_devices: int) -> np.ndarray:
  """The test task at each position of the padded task list: num_tasks rounded up to a
  multiple of num_devices, the last task repeated (its extra rows are dropped)."""
  padded = -(-num_tasks // num_devices) * num_devices
  return np.minimum(np.arange(padded), num_tasks - 1)


def gather_rows(tree):
  """Task-sharded global arrays [T, ...] -> host numpy [T, ...] with every row, on every
  process."""
  if jax.process_count() == 1:
    return jax.tree.map(np.asarray, tree)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return multihost_utils.process_allgather(tree, tiled=True)


class _Programs:
  """Alg. 2 on one test task as a pure function, and its task-parallel compiled program.

  ``run(x_params, gp_params, consts, tasks)``: ``tasks`` are :func:`task_inputs` with a
  leading task axis [T], sharded over the devices of ``mesh`` (default: every device of
  every process); the parameters and ``consts = {'frozen', 'lpips'}`` are replicated. Each
  device runs :meth:`task_outputs` on its own tasks (``lax.map``); nothing is communicated,
  the outputs stay sharded over tasks.
  """

  def __init__(self, config, spec, mesh=None):
    self.spec = spec
    self.is_loop = builders.inner_loop(config, spec, steps=int(config.eval.is_steps))
    # Aux fine-tuning uses meta.estimator (with its options) unless eval.aux_estimator
    # names another one.
    name = config.eval.aux_estimator or config.meta.estimator
    options = "" if config.eval.aux_estimator else config.meta.estimator_options
    self.aux_estimator = functools.partial(estimators.resolve(name, options),
                                           builders.inner_loop(config, spec))
    self.aux_opt = optax.with_extra_args_support(builders.aux_optimizer(config))
    self.mesh = parallel.make_mesh() if mesh is None else mesh

    def local(x_params, gp_params, consts, tasks):
      # The device's tasks one after another: the memory of one task, and the same
      # (unbatched) convolutions as on one device.
      return jax.lax.map(lambda task: self.task_outputs(x_params, gp_params, consts, task),
                         tasks)

    # No collectives: every device adapts its own tasks, and every output is per task.
    # (With check_vma off, gradients inside the body are each device's own: JAX does not
    # sum the cotangents of the replicated parameters over devices.)
    self.run = jax.jit(jax.shard_map(
        local, mesh=self.mesh, in_specs=(P(), P(), P(), P(parallel.AXIS)),
        out_specs=P(parallel.AXIS), check_vma=False))

  def aux_finetune(self, params, batches, rngs, frozen):
    """Alg. 2 lines 2-4: S alternating BiL meta-steps of the GP on the K auxiliary tasks,
    from a fresh Aux optimizer. batches: Episodes, leaves [S, K, ...]; rngs [S, K, 2]."""
    def meta_step(carry, step_inputs):
      p, opt_state, _ = meta.meta_update(self.aux_estimator, self.aux_opt, *carry,
                                         *step_inputs, frozen)
      return (p, opt_state), None

    (params, _), _ = jax.lax.scan(meta_step, (params, self.aux_opt.init(params)),
                                  (batches, rngs))
    return params

  def adapt_generate(self, params, support, query, rng, frozen):
    """IS adaptation on the shots, then the query images [q,H,W,3] (Alg. 2 lines 5-13)."""
    return adapt.adapt_and_generate(self.is_loop, params, support, query, rng, frozen)[0]

  def generate(self, params, query):
    """The query images [q,H,W,3] of ``params`` without adaptation (no dropout)."""
    return gan.generate(self.spec, params["G"], query, jax.random.PRNGKey(0), train=False)

  def task_outputs(self, x_params, gp_params, consts, task):
    """Alg. 2 on one test task (:func:`task_inputs`); pure.

    X and GP generate directly; X (n-shot) and BiL w/o Aux adapt X and the GP on the
    shots; BiL adapts the GP after Aux fine-tuning on the retrieved tasks.

    Returns:
      'scores': {metric: [R, q]}, each row's per-query metrics (rows R in COMPUTED_ROWS order);
      'grid': [R, g, H, W, 3], each row's first g = min(2, q) query images;
      'aux_tasks': int32 [K], passed through (gathered with the rows).
    """
    frozen, support, query, rng = consts["frozen"], task["support"], task["query"], task["rng"]
    tuned = self.aux_finetune(gp_params, task["aux"], task["aux_rngs"], frozen)
    # The GP and the Aux-tuned GP share one structure: one compiled adaptation for both.
    bil_noaux, bil = jax.lax.map(
        lambda p: self.adapt_generate(p, support, query, rng, frozen),
        jax.tree.map(lambda a, b: jnp.stack([a, b]), gp_params, tuned))
    fakes = {"x": self.generate(x_params, query),
             "x_nshot": self.adapt_generate(x_params, support, query, rng, frozen),
             "bil_noaux": bil_noaux, "bil": bil, "gp": self.generate(gp_params, query)}
    fakes = jnp.stack([fakes[k] for k in COMPUTED_ROWS])
    scores = jax.lax.map(lambda f: metrics.image_metrics(f, query["image"], consts["lpips"]),
                         fakes)
    return {"scores": scores, "grid": fakes[:, :GRID_QUERIES], "aux_tasks": task["aux_tasks"]}


def _mean_rows(per_task: Dict[str, List[dict]]) -> Dict[str, dict]:
  """Averages per-task metric dicts; 'lpips' is None when it was not computed."""
  means = {}
  for name, scores in per_task.items():
    means[name] = {k: (float(np.mean([s[k] for s in scores])) if k in scores[0] else None)
                   for k in rows.METRIC_KEYS}
  return means


def per_task_values(per_task: Dict[str, List[dict]]) -> Dict[str, Dict[str, List[float]]]:
  """{row: [metrics of task t]} -> {row: {metric: [value per task, in task order]}}."""
  return {name: {k: [s[k] for s in scores] for k in rows.METRIC_KEYS if k in scores[0]}
          for name, scores in per_task.items()}


def _eta(since_first: float, done: int, total: int) -> str:
  """', ETA 2m10s' after ``done`` of ``total`` tasks, from the pace since the first task
  (which includes the compile); '' before there is a pace or when done."""
  if done < 2 or done >= total:
    return ""
  return f", ETA {console.duration(since_first / (done - 1) * (total - done))}"


def evaluate(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, dict]:
  """Runs Alg. 2 on the test tasks and writes the ablation table; returns its rows.

  The test tasks are spread over every device of every process, one task per device at a
  time (the task list padded to a multiple of the device count by repeating the last
  task). Each process samples only its own tasks' Aux meta-batches; the per-task rows are
  gathered on every process, and process 0 writes the files.
  """
  from bil_jax.models import lpips as lpips_lib  # pylint: disable=g-import-not-at-top
  t0 = time.time()
  train_tasks, _, test_tasks = loading.load_data(config, workdir)
  spec = builders.build_spec(config, train_tasks.num_classes)
  lpips_params = (lpips_lib.load_lpips_params(config.eval.lpips_weights)
                  if config.eval.lpips_weights else None)
  progs = _Programs(config, spec)
  mesh = progs.mesh
  x_params, gp_params, consts = parallel.replicate(mesh, (
      load_params(workdir, "pretrain"), load_params(workdir, "meta"),
      {"frozen": builders.load_frozen(config), "lpips": lpips_params}))
  names = {k: v for k, v in rows.row_names(config.model.name, config.data.shots).items()
           if k in COMPUTED_ROWS}
  eps = test_episodes(config, test_tasks)
  sampler = episodes.Sampler.from_config(config.data)

  out = os.path.join(workdir, "eval")
  progress = periodic_actions.ReportProgress(num_train_steps=len(eps), every_steps=1,
                                             every_secs=None)
  num_devices = mesh.devices.size
  positions = padded_positions(len(eps), num_devices)
  local = parallel.local_task_slice(num_devices)
  logging.info("test phase: %d test tasks on %d devices (%d processes), %d IS steps, %d Aux "
               "steps on %d retrieved tasks; compiling its programs (first run: about a "
               "minute; cached after)", len(eps), num_devices, jax.process_count(),
               config.eval.is_steps, config.eval.aux_steps, config.eval.aux_tasks)
  per_task = {name: [] for name in names.values()}
  t_first = None
  grid_cols = {k: [] for k in GRID_COLUMNS}
  grid_rows = []  # the task name of each grid row
  aux_log = []
  for start in range(0, len(positions), num_devices):
    chunk = positions[start:start + num_devices]
    tasks = stack_tasks([task_inputs(config, sampler, train_tasks, eps[t], int(t))
                         for t in chunk[local]])
    done = gather_rows(progs.run(x_params, gp_params, consts, parallel.shard_tasks(mesh, tasks)))
    for i, t in enumerate(range(start, min(start + num_devices, len(eps)))):
      aux_log.append({"task": test_tasks.names[t],
                      "aux_tasks": [train_tasks.names[a] for a in done["aux_tasks"][i]]})
      for r, key in enumerate(COMPUTED_ROWS):
        per_task[names[key]].append({k: float(np.mean(v[i, r]))
                                     for k, v in done["scores"].items()})
      if t < config.eval.grid_tasks:
        query = eps[t]["query"]
        for r, key in enumerate(COMPUTED_ROWS):
          grid_cols[key].append(done["grid"][i, r])
        grid_cols["map"].append(visualize.colorize(query["map"][:GRID_QUERIES],
                                                   spec.num_classes))
        grid_cols["target"].append(query["image"][:GRID_QUERIES])
        grid_rows += [test_tasks.names[t]] * len(query["image"][:GRID_QUERIES])
      t_first = t_first or time.time()
      logging.info("evaluated test task %d/%d (%s)%s", t + 1, len(eps), test_tasks.names[t],
                   _eta(time.time() - t_first, t + 1, len(eps)))
      progress(t + 1)

  means = _mean_rows(per_task)
  result = {"rows": means, "per_task": per_task_values(per_task),
            "task_names": list(test_tasks.names[:len(eps)]), "row_ids": dict(names),
            "config": config.to_dict(), "num_test_tasks": len(eps),
            "queries_per_task": int(config.data.eval_queries), "seed": int(config.seed),
            "aux_retrieval": aux_log, "seconds": time.time() - t0}
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
  logging.info("results (%d test tasks):\n%s", len(eps), table)
  return means
