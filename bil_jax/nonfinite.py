"""Skipping non-finite updates, as an Optax wrapper whose counter lives in its state.

``skip_nonfinite(opt)`` behaves like ``opt`` while everything is finite. When the
gradients, the extra ``losses`` argument of ``update`` (any pytree of scalars: the losses
and metrics of the step), the updates or the new state of ``opt`` hold a NaN or Inf, it
returns zero updates and the old state of ``opt``, and counts the skip. The count is part
of the optimizer state, so it is checkpointed and restored with it (in the spirit of
``optax.apply_if_finite``, which checks the gradients only).
"""
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

MODES = ("skip", "stop")  # config.nonfinite: skip the update, or stop the run


class SkipNonFiniteState(NamedTuple):
  inner_state: Any  # the state of the wrapped optimizer
  skips: jax.Array  # int32 []: updates skipped so far


def all_finite(tree: Any) -> jax.Array:
  """Scalar bool: every floating-point leaf of ``tree`` is free of NaN and Inf (jittable)."""
  checks = [
      jnp.all(jnp.isfinite(x))
      for x in jax.tree.leaves(tree)
      if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)
  ]
  return jnp.all(jnp.stack(checks)) if checks else jnp.asarray(True)


def skip_nonfinite(opt: optax.GradientTransformation) -> optax.GradientTransformationExtraArgs:
  """``opt`` that skips (zero update, state kept, counted) any non-finite step.

  ``update(grads, state, params=None, *, losses=None, **extra)``: ``losses`` is checked
  with the rest; other extra arguments go to ``opt``. The selection happens inside jit.
  """
  opt = optax.with_extra_args_support(opt)

  def init(params):
    return SkipNonFiniteState(opt.init(params), jnp.zeros((), jnp.int32))

  def update(grads, state, params=None, *, losses=None, **extra):
    updates, inner = opt.update(grads, state.inner_state, params, **extra)
    ok = all_finite((grads, losses, updates, inner))
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)
    updates = jax.tree.map(lambda u: jnp.where(ok, u, jnp.zeros_like(u)), updates)
    skips = state.skips + jnp.where(ok, 0, 1).astype(state.skips.dtype)
    return updates, SkipNonFiniteState(keep(inner, state.inner_state), skips)

  return optax.GradientTransformationExtraArgs(init, update)


def _guard_states(opt_state: Any) -> list:
  return [
      s for s in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, SkipNonFiniteState))
      if isinstance(s, SkipNonFiniteState)
  ]


def skip_count(opt_state: Any) -> int:
  """Skipped updates recorded in ``opt_state`` (host int). Where it holds several guarded
  optimizers (pre-training: one per network), the largest count: the steps with a skip
  when every guard sees the step's losses."""
  counts = [int(jax.device_get(s.skips)) for s in _guard_states(opt_state)]
  return max(counts, default=0)
