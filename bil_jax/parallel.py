"""Data parallelism over the tasks of a meta-batch, across devices and hosts.

One 1-D device ``Mesh`` with axis ``'tasks'`` spans every device of every process. The
tasks of a meta-batch are split along that axis with ``jax.shard_map``; each device
``vmap``s the estimator over its own tasks, and per-device means are averaged with
``lax.pmean``. Because every device holds the same number of tasks, the result is the
mean over the whole meta-batch whatever the device count (up to float summation order).

Several hosts: every process runs the same program, feeds its own slice of the
meta-batch (:func:`shard_tasks`); ``bil_jax.main`` calls :func:`initialize_distributed`
before any JAX computation. Files that are not per-process are written by process 0 only
(:func:`is_main_process`); :func:`barrier` and :func:`broadcast_from_main` keep the
processes in step where process 0 does something alone (building the dataset, setting a
checkpoint aside).
"""
import logging
import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

AXIS = "tasks"


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
    from bil_jax import reliability  # pylint: disable=g-import-not-at-top
    raise reliability.TrainingError(f"{what} failed on process 0 (its log has the error)")
  return result if is_main_process() else fn()


def make_mesh(devices=None) -> Mesh:
  """A 1-D mesh over ``devices`` (default: all devices of all processes)."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (AXIS,))


def check_meta_batch(meta_batch: int, mesh: Mesh) -> None:
  """Raises a one-line error unless the meta-batch splits evenly over devices/processes."""
  n = mesh.devices.size
  if meta_batch % n:
    raise ValueError(f"meta.meta_batch={meta_batch} is not divisible by the {n} devices "
                     f"of the mesh; use a multiple of {n}")


def local_task_slice(meta_batch: int) -> slice:
  """The rows of a meta-batch this process feeds (processes own equal, ordered slices)."""
  per = meta_batch // jax.process_count()
  return slice(jax.process_index() * per, (jax.process_index() + 1) * per)


def shard_tasks(mesh: Mesh, local_tree):
  """Assembles global arrays, sharded over tasks, from this process's rows (leading axis)."""
  sharding = NamedSharding(mesh, P(AXIS))
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_tree)


def replicate(mesh: Mesh, tree):
  """Places a pytree fully replicated on every device of the mesh."""
  sharding = NamedSharding(mesh, P())
  if jax.process_count() == 1:
    return jax.device_put(tree, sharding)
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), tree)


def tasks_parallel(fn, mesh: Mesh, num_replicated_in: int, num_sharded_in: int,
                   num_trailing_replicated: int = 0):
  """shard_map ``fn`` with replicated, then task-sharded, then replicated arguments.

  ``fn`` sees its local tasks and must ``lax.pmean`` over :data:`AXIS` so that its
  outputs are replicated.
  """
  in_specs = ((P(),) * num_replicated_in + (P(AXIS),) * num_sharded_in
              + (P(),) * num_trailing_replicated)
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
  """A 'data' mesh for a batch of ``rows``: every device of every process if ``rows`` is a
  multiple of the device count, else the first d devices of each process with d from
  :func:`devices_per_process` (logged: the other devices stay idle in this phase)."""
  d = devices_per_process(rows, jax.process_count(), jax.local_device_count(), key)
  devices = [dev for p in range(jax.process_count())
             for dev in [x for x in jax.devices() if x.process_index == p][:d]]
  if len(devices) < jax.device_count():
    logging.warning("%s=%d is not a multiple of the %d devices: this phase runs on %d of "
                    "them", key, rows, jax.device_count(), len(devices))
  return data_mesh(devices)


def local_rows(rows: int) -> slice:
  """The rows of a batch of ``rows`` that this process feeds (equal, ordered slices)."""
  per = rows // jax.process_count()
  return slice(jax.process_index() * per, (jax.process_index() + 1) * per)


def shard_rows(mesh: Mesh, local_tree):
  """Global arrays split over the ``'data'`` axis, from this process's rows [rows/P, ...]."""
  sharding = NamedSharding(mesh, P(DATA_AXIS))
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_tree)
