"""The meta-training step (Alg. 1 lines 7-21): estimator vmapped over tasks, outer optimizer.

``meta_step(params, opt_state, tasks, rngs, frozen) -> (params, opt_state, metrics)``
where ``tasks`` are episodes [M, n, ...] (split ``P('tasks', 'batch')`` over the mesh:
tasks over 'tasks', the pairs of each task over 'batch') and ``rngs`` are [M] PRNG keys,
one per task (derived from the step and the task's position in the global meta-batch, so
results do not depend on the device count), split over 'tasks'.

Where the mesh splits the pairs ('batch' size > 1), the estimator runs with
``loop.spec.batch_axis = 'batch'``: every GAN loss of the adaptation and of the query set
is the mean over the whole task batch (``bil_jax.gan.batch_mean``), so the inner
gradients are averaged over 'batch' and every 'batch' device holds the same adapted
parameters, whatever the estimator (it only calls the shared helpers). With a 'batch'
size of 1 the axis is None and the step is exactly the one-device step.
"""
import dataclasses
import functools

import jax
import jax.numpy as jnp
import optax

from bil_jax import adapt as adapt_lib
from bil_jax import estimators
from bil_jax import parallel


def task_rngs(rng: jax.Array, step: int, meta_batch: int) -> jax.Array:
  """[M] keys for the tasks of meta-step ``step``: identical on every host and device count."""
  return jax.random.split(jax.random.fold_in(rng, step), meta_batch)


def meta_update(estimator, outer_opt: optax.GradientTransformation, params, opt_state, tasks, rngs,
                frozen, axis=None):
  """One outer update from M_local tasks: ``estimator`` vmapped over ``tasks`` (leaves
  [M_local, ...]) and ``rngs`` [M_local, 2], its gradients and metrics averaged over them,
  then ``outer_opt`` (with extra-args support; it also gets the losses, so a guarded one
  skips a non-finite update). Returns (params, opt_state, metrics).

  ``axis``: inside ``shard_map``, the mesh axis the tasks are split over. The GP is then
  marked varying along it, so each device's meta-gradient stays local (the cotangent of
  a device-invariant input would be summed over the devices), and the per-device means
  are averaged over it (they are already means over 'batch'). None: the tasks are all here.
  """
  local = params if axis is None else jax.lax.pcast(params, axis, to="varying")
  grads, metrics = jax.vmap(estimator, in_axes=(None, 0, 0, None))(local, tasks, rngs, frozen)
  grads, metrics = jax.tree.map(lambda g: jnp.mean(g, axis=0), (grads, metrics))
  if axis is not None:
    grads, metrics = jax.lax.pmean((grads, metrics), axis)
  updates, opt_state = outer_opt.update(grads, opt_state, params, losses=metrics)
  return optax.apply_updates(params, updates), opt_state, metrics


def split_loop(loop: adapt_lib.InnerLoop, mesh) -> adapt_lib.InnerLoop:
  """``loop`` whose GAN averages over the mesh's 'batch' axis where it splits the pairs."""
  axis = parallel.batch_axis_name(mesh)
  if axis == loop.spec.batch_axis:
    return loop
  return dataclasses.replace(loop, spec=dataclasses.replace(loop.spec, batch_axis=axis))


def make_meta_step(loop: adapt_lib.InnerLoop, estimator_name: str,
                   outer_opt: optax.GradientTransformation, mesh, estimator_options: str = ""):
  """Builds the jitted, task-parallel meta-step for ``mesh``.

  ``estimator_name`` is a shipped estimator or ``module:function``; ``estimator_options``
  is ``"name=value,..."`` of its declared options (:func:`bil_jax.estimators.resolve`).
  """
  estimator = functools.partial(estimators.resolve(estimator_name, estimator_options),
                                split_loop(loop, mesh))

  outer_opt = optax.with_extra_args_support(outer_opt)
  # Over 'batch' the GP stays invariant: there, JAX's summing of its cotangents is what
  # averages the gradients of the batch-mean losses (gan.batch_mean) over a task's pairs.
  local_step = functools.partial(meta_update, estimator, outer_opt, axis=parallel.TASKS)

  step = parallel.tasks_parallel(local_step, mesh, num_replicated_in=2, num_sharded_in=2,
                                 num_trailing_replicated=1,
                                 sharded_specs=(parallel.episode_spec(mesh), parallel.TASK_SPEC))
  return jax.jit(step)
