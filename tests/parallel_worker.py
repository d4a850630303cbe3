"""Runs one meta-step of the tiny GAN and saves the new parameters (used by test_parallel).

  python tests/parallel_worker.py OUT.npz [PROCESS_ID NUM_PROCESSES PORT]

Set XLA_FLAGS=--xla_force_host_platform_device_count=N before running for N CPU devices.
With a process id, it joins a multi-process run coordinated on 127.0.0.1:PORT with gloo
CPU collectives and feeds only its own slice of the meta-batch.
"""
import os
import sys

import jax

if len(sys.argv) > 2:
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  os.environ.update(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{sys.argv[4]}",
                    JAX_NUM_PROCESSES=sys.argv[3], JAX_PROCESS_ID=sys.argv[2])

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # pylint: disable=g-import-not-at-top
import optax  # pylint: disable=g-import-not-at-top
from jax.flatten_util import ravel_pytree  # pylint: disable=g-import-not-at-top

import tiny  # pylint: disable=g-import-not-at-top
from bil_jax import meta, parallel  # pylint: disable=g-import-not-at-top

META_BATCH = 4


def main():
  parallel.initialize_distributed()
  mesh = parallel.make_mesh()
  parallel.check_meta_batch(META_BATCH, mesh)
  sp = tiny.spec()
  lp = tiny.loop(sp, "adam", lr=0.01, steps=2)
  # Outer SGD: parameters move linearly in the gradient, so the comparison tests the
  # averaged meta-gradient (Adam's first step, lr * sign(g), would amplify rounding
  # noise in near-zero gradient entries into +-lr differences).
  outer = optax.sgd(0.1)
  step = meta.make_meta_step(lp, "second_order", outer, mesh)
  params = tiny.init_params(sp)
  opt_state = outer.init(params)
  batch = tiny.meta_batch([20, 21, 22, 23])
  rngs = np.asarray(meta.task_rngs(jax.random.PRNGKey(0), 0, META_BATCH))
  local = parallel.local_task_slice(META_BATCH)
  new, _, metrics = step(parallel.replicate(mesh, params), parallel.replicate(mesh, opt_state),
                         parallel.shard_tasks(mesh, jax.tree.map(lambda x: x[local], batch)),
                         parallel.shard_tasks(mesh, rngs[local]), None)
  flat = np.asarray(ravel_pytree(jax.device_get(new))[0])
  if jax.process_index() == 0:
    np.savez(sys.argv[1], params=flat, before=np.asarray(ravel_pytree(params)[0]),
             loss=float(metrics["query_g_loss_after"]),
             devices=jax.device_count(), processes=jax.process_count())


if __name__ == "__main__":
  main()
