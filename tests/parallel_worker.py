"""Runs one meta-step of the tiny GAN and saves the new parameters (used by test_parallel).

  python tests/parallel_worker.py OUT.npz [PROCESS_ID NUM_PROCESSES PORT]
  python tests/parallel_worker.py OUT.npz mesh ESTIMATOR[,...] [PROCESS_ID NUM_PROCESSES PORT]

Set XLA_FLAGS=--xla_force_host_platform_device_count=N before running for N CPU devices.
With a process id, it joins a multi-process run coordinated on 127.0.0.1:PORT with gloo
CPU collectives and feeds only its own slice of the meta-batch. With ``mesh``: a
meta-batch of 5 tasks with 4 shots and 4 queries each, of the tiny GAN with batch norm
and dropout, on the ('tasks', 'batch') mesh chosen for the device count (10 devices:
5 x 2; 2 processes of 1 device: 1 x 2, each process feeding all 5 tasks and each device
holding 2 of the 4 shots and queries), one step of each estimator; OUT holds
``params_NAME`` and ``mesh``.
"""
import os
import sys

import jax

MESH_CASE = len(sys.argv) > 2 and sys.argv[2] == "mesh"
PROCESS_ARGS = sys.argv[4:7] if MESH_CASE else sys.argv[2:5]
if PROCESS_ARGS:
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  os.environ.update(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{PROCESS_ARGS[2]}",
                    JAX_NUM_PROCESSES=PROCESS_ARGS[1], JAX_PROCESS_ID=PROCESS_ARGS[0])

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # pylint: disable=g-import-not-at-top
import optax  # pylint: disable=g-import-not-at-top
from jax.flatten_util import ravel_pytree  # pylint: disable=g-import-not-at-top

import tiny  # pylint: disable=g-import-not-at-top
from bil_jax import estimators, meta, parallel  # pylint: disable=g-import-not-at-top

META_BATCH = 4
# The mesh case: the paper's meta-batch of 5, with 4 shots and 4 queries per task.
MESH_M, MESH_SHOTS, MESH_QUERIES = 5, 4, 4


def one_step(mesh, sp, lp, estimator, batch, m, lr=0.1):
  """(params before, params after one meta-step, metrics) of ``estimator`` on ``mesh``."""
  # Outer SGD: parameters move linearly in the gradient, so the comparison tests the
  # averaged meta-gradient (Adam's first step, lr * sign(g), would amplify rounding
  # noise in near-zero gradient entries into +-lr differences).
  outer = optax.sgd(lr)
  step = meta.make_meta_step(lp, estimator, outer, mesh)
  params = estimators.init_meta_parameters(estimator, tiny.init_params(sp))
  rngs = np.asarray(meta.task_rngs(jax.random.PRNGKey(0), 0, m))
  local = parallel.local_task_slice(m, mesh)
  new, _, metrics = step(parallel.replicate(mesh, params),
                         parallel.replicate(mesh, outer.init(params)),
                         parallel.shard_episodes(mesh, jax.tree.map(lambda x: x[local], batch), m),
                         parallel.shard_tasks(mesh, rngs[local], m), None)
  flat = lambda p: np.asarray(ravel_pytree(jax.device_get(p))[0])
  return flat(params), flat(new), jax.device_get(metrics)


def mesh_case(out, estimator_names):
  parallel.initialize_distributed()
  mesh = parallel.make_meta_mesh(MESH_M, MESH_SHOTS, MESH_QUERIES)
  sp = tiny.spec(norm=True)
  lp = tiny.loop(sp, "adam", lr=0.01, steps=2)
  batch = tiny.meta_batch(range(30, 30 + MESH_M), shots=MESH_SHOTS, queries=MESH_QUERIES)
  saved = {"mesh": np.asarray(mesh.devices.shape)}
  for name in estimator_names.split(","):
    before, after, metrics = one_step(mesh, sp, lp, name, batch, MESH_M)
    saved.update({
        f"before_{name}": before, f"params_{name}": after,
        f"loss_{name}": float(metrics["query_g_loss_after"])
    })
  if jax.process_index() == 0:
    np.savez(out, processes=jax.process_count(), **saved)


def main():
  if MESH_CASE:
    mesh_case(sys.argv[1], sys.argv[3])
    return
  parallel.initialize_distributed()
  mesh = parallel.make_meta_mesh(META_BATCH, shots=2, queries=2)
  sp = tiny.spec()
  lp = tiny.loop(sp, "adam", lr=0.01, steps=2)
  batch = tiny.meta_batch([20, 21, 22, 23])
  before, new, metrics = one_step(mesh, sp, lp, "second_order", batch, META_BATCH)
  if jax.process_index() == 0:
    np.savez(sys.argv[1], params=new, before=before, loss=float(metrics["query_g_loss_after"]),
             devices=jax.device_count(), processes=jax.process_count())


if __name__ == "__main__":
  main()
