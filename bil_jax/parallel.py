"""Data parallelism over the meta-batch, across devices and hosts.

One 2-D device ``Mesh`` with axes ``('tasks', 'batch')`` spans every device of every
process (every training device: :func:`bil_jax.cpu_devices.training_devices` keeps training
on the first CPU device where ``main`` exposed one per core for evaluation). The tasks of a
meta-batch are split along ``'tasks'`` and the pairs of each task (its shots, and its
queries) along ``'batch'``, with ``jax.shard_map``: the episodes
[M, n, ...] are sharded ``P('tasks', 'batch')``, the per-task keys [M, ...]
``P('tasks')``. Each device ``vmap``s the estimator over its own tasks; inside a task the
losses are means over the whole task batch (``lax.pmean`` over ``'batch'``,
``bil_jax.gan``), so the inner GAN gradients are averaged over ``'batch'`` and every
``'batch'`` device holds the same adapted parameters; per-device meta-gradients are then
averaged over ``'tasks'`` (``bil_jax.meta``). Because every device holds the same number
of tasks and pairs, the result is the mean over the whole meta-batch whatever the device
count (up to float summation order).

The mesh shape (:func:`choose_mesh_shape`): the largest ``'tasks'`` size T that divides
both the meta-batch M and the device count N such that B = N / T divides the shots and
the queries; ``meta.mesh_shape = "TxB"`` overrides it. A 'batch' axis of size 1 is no
axis at all for the adaptation (:func:`batch_axis_name` is None), so a run whose tasks
split over the devices computes exactly what it computed on a 1-D mesh.

Several hosts: every process runs the same program and feeds the tasks its devices hold
a block of (:func:`local_task_slice`; :func:`shard_episodes` places each device's
(tasks, pairs) block, :func:`shard_tasks` the per-task keys); ``bil_jax.main`` calls
:func:`initialize_distributed` before any JAX computation. Files that are not
per-process are written by process 0 only (:func:`is_main_process`); :func:`barrier`
and :func:`broadcast_from_main` keep the processes in step where process 0 does
something alone (building the dataset, setting a checkpoint aside).
"""
import logging
import math
import os
from typing import Optional

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from bil_jax import cpu_devices

TASKS = "tasks"
BATCH = "batch"
AXES = (TASKS, BATCH)
TASK_SPEC = P(TASKS)  # [M, ...] per-task arrays (keys): split over tasks
EPISODE_SPEC = P(TASKS, BATCH)  # [M, n, ...] pairs of each task: tasks x their pairs


def initialize_distributed(num_hosts: int = 1) -> None:
  """Calls ``jax.distributed.initialize`` when several processes are asked for.

  * ``JAX_COORDINATOR_ADDRESS`` (host:port of process 0), ``JAX_NUM_PROCESSES`` and
    ``JAX_PROCESS_ID`` in the environment: initialise with exactly these.
  * Otherwise ``num_hosts > 1`` (``config.meta.num_hosts``) or ``BIL_JAX_DISTRIBUTED=1``:
    initialise with JAX's cluster auto-detection (Cloud TPU pods, SLURM, Open MPI, ...).
  * Otherwise: a single process; nothing to do.
  """
  if jax.distributed.is_initialized():
    return
  env = os.environ
  if "JAX_COORDINATOR_ADDRESS" in env and "JAX_NUM_PROCESSES" in env:
    jax.distributed.initialize(coordinator_address=env["JAX_COORDINATOR_ADDRESS"],
                               num_processes=int(env["JAX_NUM_PROCESSES"]),
                               process_id=int(env.get("JAX_PROCESS_ID", "0")))
  elif num_hosts > 1 or env.get("BIL_JAX_DISTRIBUTED") == "1":
    jax.distributed.initialize()


def is_main_process() -> bool:
  """Whether this is process 0, the one that writes files shared by all processes."""
  return jax.process_index() == 0


def barrier(name: str) -> None:
  """Waits until every process reaches the barrier ``name`` (nothing to do on one process).

  Every process must pass the same barriers in the same order; a process that does not
  arrive makes the others fail with JAX's coordination error (not hang for ever).
  """
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(name)


def broadcast_from_main(values) -> np.ndarray:
  """Process 0's ``values`` (an int32 vector) on every process, e.g. a decision it made."""
  values = np.asarray(values, np.int32)
  if jax.process_count() == 1:
    return values
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return np.asarray(multihost_utils.broadcast_one_to_all(values), np.int32)


def main_process_first(fn, what: str):
  """``fn()`` on process 0, then on the others once it succeeded; returns its result.

  For work whose first call writes a shared cache that later calls read (building a TFDS
  dataset): process 0 builds it alone, the others read what it built. If it fails on
  process 0, the others stop with a one-line TrainingError naming ``what``.
  """
  if jax.process_count() == 1:
    return fn()
  ok, result = 1, None
  if is_main_process():
    try:
      result = fn()
    except BaseException:
      broadcast_from_main([0])
      raise
  ok = int(broadcast_from_main([ok])[0])
  if not ok:
    from bil_jax import errors  # pylint: disable=g-import-not-at-top
    raise errors.TrainingError(f"{what} failed on process 0 (its log has the error)")
  return result if is_main_process() else fn()


def make_mesh(devices=None, shape=None) -> Mesh:
  """A 2-D ('tasks', 'batch') mesh over ``devices`` (default: all devices of all processes).

  ``shape`` (T, B) with T * B = len(devices); None -> (len(devices), 1): tasks only, as a
  1-D mesh. Devices fill the mesh in order, 'batch' fastest (a process's devices are
  neighbours, so each holds whole tasks where B divides its device count).
  """
  devices = jax.devices() if devices is None else list(devices)
  t, b = (len(devices), 1) if shape is None else (int(shape[0]), int(shape[1]))
  if t * b != len(devices):
    raise ValueError(f"mesh shape {t}x{b} does not have {len(devices)} devices")
  return Mesh(np.asarray(devices).reshape(t, b), AXES)


def _divisors(n: int) -> list:
  return [d for d in range(1, n + 1) if n % d == 0]


def _fits(t: int, b: int, meta_batch: int, shots: int, queries: int) -> bool:
  """Whether a T x B mesh splits M tasks over T and each task's shots and queries over B."""
  return meta_batch % t == 0 and shots % b == 0 and queries % b == 0


def usable_device_counts(meta_batch: int, shots: int, queries: int) -> list:
  """Sorted device counts T * B with T | meta_batch and B | shots, B | queries."""
  return sorted(
      {t * b for t in _divisors(meta_batch) for b in _divisors(math.gcd(shots, queries) or 1)})


def _no_fit(num_devices: int, meta_batch: int, shots: int, queries: int) -> str:
  """The one-line error: M tasks and their pairs cannot be split over N devices; what can."""
  counts = [str(n) for n in usable_device_counts(meta_batch, shots, queries)]
  listed = ", ".join(counts[:-1]) + " or " + counts[-1] if len(counts) > 1 else counts[0]
  return (f"meta.meta_batch={meta_batch} with data.shots={shots}, data.queries={queries} "
          f"cannot be split over {num_devices} devices; use {listed} devices")


def choose_mesh_shape(num_devices: int, meta_batch: int, shots: int, queries: int) -> tuple:
  """(T, B) of the ('tasks', 'batch') mesh for N = ``num_devices`` devices.

  The rule: the largest T that divides both the meta-batch M and N such that B = N / T
  divides both the shots and the queries (queries 0: any B). So the tasks are split first
  (no collective inside the adaptation where T = N fits), the pairs of each task only
  where the tasks alone cannot use the devices. M=5, 4 shots, 4 queries: N=5 -> (5, 1),
  10 -> (5, 2), 20 -> (5, 4), 4 -> (1, 4).

  Raises a one-line ValueError naming the usable device counts where no shape fits.
  """
  for t in sorted(_divisors(num_devices), reverse=True):
    if _fits(t, num_devices // t, meta_batch, shots, queries):
      return t, num_devices // t
  raise ValueError(_no_fit(num_devices, meta_batch, shots, queries))


def parse_mesh_shape(text: str) -> Optional[tuple]:
  """``meta.mesh_shape``: "" -> None (choose automatically), "TxB" -> (T, B)."""
  text = (text or "").strip().lower()
  if not text:
    return None
  parts = text.split("x")
  if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
    raise ValueError(f"meta.mesh_shape={text!r} is not \"\" (automatic) or \"TxB\" "
                     "(tasks x batch, e.g. \"5x2\")")
  return int(parts[0]), int(parts[1])


def mesh_shape(num_devices: int, meta_batch: int, shots: int, queries: int,
               override: str = "") -> tuple:
  """(T, B): ``override`` ("TxB", ``meta.mesh_shape``) checked, else :func:`choose_mesh_shape`."""
  shape = parse_mesh_shape(override)
  if shape is None:
    return choose_mesh_shape(num_devices, meta_batch, shots, queries)
  t, b = shape
  if t * b != num_devices:
    raise ValueError(f"meta.mesh_shape={override!r} has {t * b} devices, not the "
                     f"{num_devices} of this run")
  if not _fits(t, b, meta_batch, shots, queries):
    raise ValueError(f"meta.mesh_shape={override!r} does not split meta.meta_batch="
                     f"{meta_batch} over {t} (tasks) and data.shots={shots}, "
                     f"data.queries={queries} over {b} (batch)")
  return t, b


def make_meta_mesh(meta_batch: int, shots: int, queries: int, override: str = "",
                   devices=None) -> Mesh:
  """The meta-training mesh over ``devices`` (default: all): shape from :func:`mesh_shape`."""
  devices = jax.devices() if devices is None else list(devices)
  return make_mesh(devices, mesh_shape(len(devices), meta_batch, shots, queries, override))


def batch_axis_name(mesh: Mesh) -> Optional[str]:
  """'batch' where the mesh splits the pairs of a task (its 'batch' size > 1), else None."""
  return BATCH if mesh.shape.get(BATCH, 1) > 1 else None


def episode_spec(mesh: Mesh) -> P:
  """The spec of episodes [M, n, ...] inside ``shard_map``: :data:`EPISODE_SPEC` where the
  mesh splits the pairs, else :data:`TASK_SPEC` (a 'batch' of size 1 is not an axis the
  values vary along: the program is the one of a 1-D mesh)."""
  return EPISODE_SPEC if batch_axis_name(mesh) else TASK_SPEC


def _task_range(mesh: Mesh) -> slice:
  """The tasks whose blocks this process's devices hold: the rows it must feed."""
  num_tasks_axis = mesh.devices.shape[0]
  mine = [
      i for i in range(num_tasks_axis)
      if any(d.process_index == jax.process_index() for d in mesh.devices[i].flat)
  ]
  return slice(min(mine), max(mine) + 1)


def local_rows(rows: int) -> slice:
  """The rows of a batch of ``rows`` that this process feeds (equal, ordered slices)."""
  per = rows // jax.process_count()
  return slice(jax.process_index() * per, (jax.process_index() + 1) * per)


def local_task_slice(meta_batch: int, mesh: Optional[Mesh] = None) -> slice:
  """The rows of a meta-batch this process feeds.

  Without ``mesh``: equal, ordered slices per process (the 1-D mesh). With a mesh: the
  tasks any of this process's devices holds a block of (where B does not divide a
  process's device count, two processes both feed the task they share).
  """
  if mesh is None:
    return local_rows(meta_batch)
  rows = _task_range(mesh)
  per = meta_batch // mesh.devices.shape[0]
  return slice(rows.start * per, rows.stop * per)


def _place(mesh: Mesh, spec: P, local_tree, rows: Optional[slice], meta_batch: Optional[int]):
  """Global arrays with ``spec`` from this process's rows ``local_tree`` (leading axis)."""
  sharding = NamedSharding(mesh, spec)
  if jax.process_count() == 1:
    return jax.tree.map(lambda x: jax.device_put(np.asarray(x), sharding), local_tree)
  if rows is None:
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)),
                        local_tree)

  def local_index(idx):
    """A device's global index (slices) -> the same block of the local rows."""
    first = idx[0]
    if first.start is None and first.stop is None:
      return idx
    return (slice(first.start - rows.start, first.stop - rows.start),) + tuple(idx[1:])

  def one(x):
    x = np.asarray(x)
    return jax.make_array_from_callback((meta_batch,) + x.shape[1:], sharding,
                                        lambda idx: x[local_index(idx)])

  return jax.tree.map(one, local_tree)


def shard_tasks(mesh: Mesh, local_tree, meta_batch: Optional[int] = None):
  """Global arrays [M, ...] split over 'tasks' (replicated over 'batch'), e.g. the task
  keys, from this process's rows: ``x[local_task_slice(M, mesh)]`` with ``meta_batch``
  given, else equal per-process slices (:func:`local_task_slice` without a mesh)."""
  rows = None if meta_batch is None else local_task_slice(meta_batch, mesh)
  return _place(mesh, TASK_SPEC, local_tree, rows, meta_batch)


def shard_episodes(mesh: Mesh, local_tree, meta_batch: Optional[int] = None):
  """Global episodes [M, n, ...] placed ``P('tasks', 'batch')``: each device gets its
  tasks' block of n / B pairs. ``local_tree`` and ``meta_batch`` as in :func:`shard_tasks`."""
  rows = None if meta_batch is None else local_task_slice(meta_batch, mesh)
  return _place(mesh, EPISODE_SPEC, local_tree, rows, meta_batch)


def replicate(mesh: Mesh, tree):
  """Places a pytree fully replicated on every device of the mesh."""
  sharding = NamedSharding(mesh, P())
  if jax.process_count() == 1:
    return jax.device_put(tree, sharding)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)),
                      tree)


def tasks_parallel(fn, mesh: Mesh, num_replicated_in: int, num_sharded_in: int,
                   num_trailing_replicated: int = 0, sharded_specs=None):
  """shard_map ``fn`` with replicated, then sharded, then replicated arguments.

  The sharded arguments take ``sharded_specs`` (default: all :data:`TASK_SPEC`, split
  over 'tasks'; :data:`EPISODE_SPEC` for [M, n, ...] episodes). ``fn`` sees its local
  block and must ``lax.pmean`` over the axes its inputs vary along so that its outputs
  are replicated.
  """
  sharded = tuple(sharded_specs) if sharded_specs is not None else (TASK_SPEC,) * num_sharded_in
  if len(sharded) != num_sharded_in:
    raise ValueError(f"{len(sharded)} sharded_specs for {num_sharded_in} sharded arguments")
  in_specs = ((P(),) * num_replicated_in + sharded + (P(),) * num_trailing_replicated)
  return jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=P())


# ---------------------------------------------------------------------------------------
# Pre-training: the rows of one batch split over every device of every process.

DATA_AXIS = "data"


def data_mesh(devices=None) -> Mesh:
  """A 1-D mesh with axis ``'data'`` over ``devices`` (default: all devices of all
  processes): pre-training's batch rows are split along it."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def devices_per_process(rows: int, processes: int, local_devices: int, key: str) -> int:
  """The most devices d <= ``local_devices`` per process such that ``rows`` splits evenly
  over ``processes`` x d devices; a one-line error naming ``key`` if none does (the
  process count does not divide ``rows``)."""
  for d in range(local_devices, 0, -1):
    if rows % (processes * d) == 0:
      return d
  raise ValueError(f"{key}={rows} cannot be split over {processes} processes; use a multiple "
                   f"of {processes}")


def data_mesh_for(rows: int, key: str) -> Mesh:
  """A 'data' mesh for a batch of ``rows``: every training device
  (:func:`bil_jax.cpu_devices.training_devices`) of every process if ``rows`` is a
  multiple of their count, else the first d of each process with d from
  :func:`devices_per_process` (logged: the other devices stay idle in this phase)."""
  usable = cpu_devices.training_devices()
  per_process = [
      [dev for dev in usable if dev.process_index == p] for p in range(jax.process_count())
  ]
  d = devices_per_process(rows, jax.process_count(), min(len(x) for x in per_process), key)
  devices = [dev for local in per_process for dev in local[:d]]
  if len(devices) < len(usable):
    logging.warning("%s=%d is not a multiple of the %d devices: this phase runs on %d of "
                    "them", key, rows, len(usable), len(devices))
  return data_mesh(devices)


def shard_rows(mesh: Mesh, local_tree):
  """Global arrays split over the ``'data'`` axis, from this process's rows [rows/P, ...]."""
  return _place(mesh, P(DATA_AXIS), local_tree, None, None)
