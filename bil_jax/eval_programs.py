"""The test phase's device programs: Alg. 2 and the table's other rows on one task, as pure
functions, and their task-parallel compiled forms (:class:`Programs`).

Three programs, one object (:class:`Programs`) for tuning and the test phase:

  run_aux(params, consts, tasks)   Aux fine-tuning of the GP on each task's retrieved and
                                   random training tasks (:meth:`Programs.aux_starts`),
                                   compiled once for both of the others
  run(params, consts, tasks)       every row of the table on each test task
                                   (:meth:`Programs.task_outputs`), after run_aux
  run_val(params, consts, tasks)   the tuning grid's query SSIM on each validation task
                                   (:meth:`Programs.val_scores`), after run_aux

``tasks`` are :func:`bil_jax.eval_inputs.task_inputs` with a leading task axis [T] (one
task per device, :func:`run_tasks`); ``params = {'x', 'xplus', 'gp'}`` and ``consts``
(:func:`host_consts`) are replicated. The IS settings chosen on validation enter ``run`` as
data (``consts['settings']``, :func:`settings_inputs`): a learning rate and an index into
the grid's step counts per row. No program depends on them or on the data: each
compiles once per config (a rerun that tunes differently loads ``run`` from the persistent
compilation cache). Every row's adaptation is one program for the grid's step counts that
skips the segments after its own count (``lax.cond``) and keeps the images after it; the
images after s steps equal an s-step adaptation's.
"""
import functools
from typing import Dict, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import PartitionSpec as P

from bil_jax import adapt, builders, estimators, gan, lookups, meta, metrics, parallel, rows, tuning
from bil_jax.eval_inputs import padded_positions, stack_tasks

ROW_IDS = rows.ROW_IDS  # every row of the table, computed by task_outputs in this order
GRID_QUERIES = 2  # query images per task in the sample grid
# The rows adapted on the shots from one stacked program, and the parameters each starts
# from ('aux': the GP after Aux fine-tuning on the retrieved tasks, 'aux_random': on
# random ones).
IS_ROWS = ("x_nshot", "xplus_nshot", "bil_noaux", "bil", "bil_aux_random")
STARTS = {
    "x_nshot": "x", "xplus_nshot": "xplus", "bil_noaux": "gp", "bil": "aux",
    "bil_aux_random": "aux_random"
}
# The task inputs of Aux fine-tuning (Programs.aux_starts).
AUX_INPUTS = ("aux", "aux_random", "aux_rngs")
# Every n-shot row, in the order of consts['settings'].
SETTING_ROWS = IS_ROWS + ("bil_aux_merged",)


def settings_inputs(grid, settings: Dict[str, tuple]) -> dict:
  """{row: (IS lr, IS steps)} of every row of :data:`SETTING_ROWS` -> the ``run`` input
  {'lr': float32 [R], 'step': int32 [R]}, 'step' indexing the grid's step counts.

  Raises ValueError naming a row whose step count is not in the grid."""
  steps = list(grid[1])
  for r in SETTING_ROWS:
    if settings[r][1] not in steps:
      raise ValueError(f"IS steps {settings[r][1]} of row {r!r} are not in the tuning grid's "
                       f"step counts {tuple(steps)}")
  return {
      "lr": np.asarray([settings[r][0] for r in SETTING_ROWS], np.float32),
      "step": np.asarray([steps.index(settings[r][1]) for r in SETTING_ROWS], np.int32)
  }


def host_consts(config) -> dict:
  """The never-trained inputs of both programs: {'frozen': VGG16 parameters or None,
  'lpips': LPIPS parameters (``eval.lpips_weights``) or None}."""
  from bil_jax.models import lpips as lpips_lib  # pylint: disable=g-import-not-at-top
  lpips = (lpips_lib.load_lpips_params(config.eval.lpips_weights)
           if config.eval.lpips_weights else None)
  return {"frozen": builders.load_frozen(config), "lpips": lpips}


def gather_rows(tree):
  """Task-sharded global arrays [T, ...] -> host numpy [T, ...] with every row, on every
  process."""
  if jax.process_count() == 1:
    return jax.tree.map(np.asarray, tree)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return multihost_utils.process_allgather(tree, tiled=True)


class Programs:
  """Alg. 2 on one task as pure functions, and their task-parallel compiled programs.

  Each device runs the per-task function on its own tasks (``lax.map``); nothing is
  communicated, the outputs stay sharded over tasks. ``mesh``: default every device of
  every process.
  """

  def __init__(self, config, spec, mesh=None):
    self.config, self.spec = config, spec
    self.grid = tuning.grid(config)
    # Aux fine-tuning uses meta.estimator (with its options) unless eval.aux_estimator
    # names another one.
    name = config.eval.aux_estimator or config.meta.estimator
    options = "" if config.eval.aux_estimator else config.meta.estimator_options
    self.aux_estimator = functools.partial(estimators.resolve(name, options),
                                           builders.inner_loop(config, spec))
    self.aux_opt = optax.with_extra_args_support(builders.aux_optimizer(config))
    self.mesh = parallel.make_mesh() if mesh is None else mesh
    # Aux fine-tuning, the costliest part to compile, is its own program, compiled once for
    # tuning and the test phase: its per-task outputs (sharded like the tasks) enter the
    # other two as the tasks' 'aux_starts'.
    self.run_aux = self._sharded(self.aux_starts)
    self.run = self._after_aux(self._sharded(self.task_outputs))
    self.run_val = self._after_aux(self._sharded(self.val_scores))

  def _after_aux(self, program):
    """``program(params, consts, tasks)`` on the tasks with their 'aux_starts' from
    ``run_aux`` added."""

    def run(params, consts, tasks):
      # Only what Aux fine-tuning reads, so that validation and test tasks share its program.
      starts = self.run_aux(params, {"frozen": consts["frozen"]}, {k: tasks[k] for k in AUX_INPUTS})
      return program(params, consts, dict(tasks, aux_starts=starts))

    return run

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

  def adapt_at(self, params, lr, support, query, rng, frozen, post=None, last=None):
    """:func:`bil_jax.adapt.adapt_at` at every step count of the grid, with the IS
    optimizer of ``config.meta`` at ``lr``: [S, ...]; ``last`` (an index into the grid's
    step counts): skip the steps after that count (their images are zeros)."""
    steps = self.grid[1]
    loop = builders.inner_loop(self.config, self.spec, steps=max(steps), lr=lr)
    return adapt.adapt_at(loop, params, support, query, rng, frozen, steps, post, last)

  def adapt_many(self, starts, lrs, support, query, rng, frozen, post=None, lasts=None):
    """:meth:`adapt_at` of each start (a list of parameters) at its lr (a float or a
    scalar array) and, given ``lasts``, up to its own step count (an index into the
    grid's counts, as :meth:`adapt_at`'s ``last``): [len(starts), S, ...]. Starts of one
    tree structure share one compiled adaptation (``lax.map``)."""
    groups = {}
    for i, p in enumerate(starts):
      groups.setdefault(jax.tree.structure(p), []).append(i)
    out = [None] * len(starts)
    for idx in groups.values():
      stacked = jax.tree.map(lambda *a: jnp.stack(a), *[starts[i] for i in idx])
      xs = (stacked, jnp.stack([jnp.asarray(lrs[i], jnp.float32) for i in idx]))
      if lasts is not None:
        xs += (jnp.stack([jnp.asarray(lasts[i], jnp.int32) for i in idx]),)
      # a: (start, lr) or (start, lr, last)
      res = jax.lax.map(
          lambda a: self.adapt_at(a[0], a[1], support, query, rng, frozen, post, *a[2:]), xs)
      for j, i in enumerate(idx):
        out[i] = jax.tree.map(lambda r: r[j], res)  # pylint: disable=cell-var-from-loop
    return jnp.stack(out)

  def generate(self, params, query):
    """The query images [q,H,W,3] of ``params`` without adaptation (no dropout)."""
    return gan.generate(self.spec, params["G"], query, jax.random.PRNGKey(0), train=False)

  def aux_starts(self, params, consts, task):
    """Alg. 2 lines 2-4 on one task: {'aux': the GP after Aux fine-tuning on the retrieved
    tasks, 'aux_random': on random ones (the ablation)}. Both run through one compiled
    meta-step (``lax.map`` over the two task sets)."""

    def finetune(batches):
      return self.aux_finetune(params["gp"], batches, task["aux_rngs"], consts["frozen"])

    both = jax.lax.map(
        finetune, jax.tree.map(lambda a, b: jnp.stack([a, b]), task["aux"], task["aux_random"]))
    return {k: jax.tree.map(lambda a: a[i], both) for i, k in enumerate(("aux", "aux_random"))}  # pylint: disable=cell-var-from-loop

  def with_aux(self, params, consts, task):
    """``params`` plus :meth:`aux_starts`'s 'aux' and 'aux_random': the task's
    'aux_starts' where ``run_aux`` made them, else computed here."""
    starts = task["aux_starts"] if "aux_starts" in task else self.aux_starts(params, consts, task)
    return dict(params, **starts)

  def val_scores(self, params, consts, task):
    """Query SSIM [R, L, S] of the tuned rows (R = tuning.TUNED_ROWS, their order) after
    IS adaptation at each grid learning rate L and step count S on one validation task."""
    lrs, steps = self.grid
    frozen, query = consts["frozen"], task["query"]
    start = self.with_aux(params, consts, task)
    starts = [start[STARTS[r]] for r in tuning.TUNED_ROWS for _ in lrs]
    ssim = lambda f: jax.vmap(lambda x: metrics.ssim(x, query["image"]).mean())(f)  # pylint: disable=unnecessary-lambda-assignment
    scores = self.adapt_many(starts,
                             list(lrs) * len(tuning.TUNED_ROWS), task["support"], query,
                             task["rng"], frozen, post=ssim)
    return scores.reshape(len(tuning.TUNED_ROWS), len(lrs), len(steps))

  def task_outputs(self, params, consts, task):
    """Alg. 2 and the table's other rows on one test task (:func:`task_inputs`); pure.

    X, X+ and GP generate directly; the IS rows adapt their start (STARTS) on the shots at
    their own learning rate and step count (``consts['settings']``,
    :func:`settings_inputs`), each adaptation one program for every count of the grid
    that stops after the row's own count; BiL's start is the GP after Aux fine-tuning on
    the retrieved tasks, the random-Aux ablation's after Aux fine-tuning on random ones;
    the merged ablation adapts the GP on the shots plus the 'merged' pairs; the lookups
    come with the task.

    Returns:
      'scores': {metric: [R, q]}, each row's per-query metrics (rows R in ROW_IDS order);
      'grid': [R, g, H, W, 3], each row's first g = min(2, q) query images;
      'aux_tasks', 'aux_random_tasks': int32 [K], passed through (gathered with the rows).
    """
    frozen, support, query, rng = consts["frozen"], task["support"], task["query"], task["rng"]
    lr, step = consts["settings"]["lr"], consts["settings"]["step"]
    start = self.with_aux(params, consts, task)
    # Each row's adaptation stops at its own step count (the later segments are skipped).
    adapted = self.adapt_many([start[STARTS[r]] for r in IS_ROWS], lr, support, query, rng, frozen,
                              lasts=step)
    fakes = {r: adapted[i, step[i]] for i, r in enumerate(IS_ROWS)}
    merged = jax.tree.map(lambda a, b: jnp.concatenate([a, b.astype(a.dtype)]), support,
                          {k: task["merged"][k] for k in support})
    m = SETTING_ROWS.index("bil_aux_merged")
    fakes["bil_aux_merged"] = self.adapt_at(params["gp"], lr[m], merged, query, rng, frozen,
                                            last=step[m])[step[m]]
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
  :class:`Programs` run) on every device, one task per device at a time (the list padded
  by repeating its last task); each process makes only its own tasks' ``inputs(t)``;
  outputs are gathered."""
  todo = np.asarray(todo, np.int64)
  num_devices = mesh.devices.size
  positions = todo[padded_positions(len(todo), num_devices)]
  local = parallel.local_task_slice(num_devices)
  for start in range(0, len(positions), num_devices):
    chunk = positions[start:start + num_devices]
    tasks = parallel.shard_tasks(mesh, stack_tasks([inputs(int(t)) for t in chunk[local]]))
    done = gather_rows(program(params, consts, tasks))
    for i in range(min(num_devices, len(todo) - start)):
      yield int(chunk[i]), jax.tree.map(lambda a: a[i], done)  # pylint: disable=cell-var-from-loop
