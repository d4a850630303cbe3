"""The public building blocks of meta-gradient estimators.

An estimator is a function ``(loop, params, task, rng, frozen=None, *, options...) ->
(grads, metrics)`` (see :mod:`bil_jax.estimators`). These helpers are what the shipped
estimators are made of, and what a user's estimator is written with:

* :func:`adapt` — theta' = Adapt_K(theta; T(tr)), the unrolled IS adaptation.
* :func:`query_losses` — (L_G, L_D) on T(te), with its own dropout stream.
* :func:`two_pullbacks` — g_G = dL_G/dtheta_G and g_D = dL_D/dtheta_D from one vjp.
* :func:`standard_metrics` — the scalar diagnostics every estimator reports.
"""
from typing import Any, Callable, Tuple

import jax
import jax.numpy as jnp
import optax

from bil_jax import adapt as adapt_lib
from bil_jax import gan
from bil_jax import streams

adapt = adapt_lib.adapt
run_steps = adapt_lib.run_steps


def query_losses(loop: adapt_lib.InnerLoop, params: Any, task: dict, rng: jax.Array,
                 frozen: Any = None) -> Tuple[Tuple[jax.Array, jax.Array], dict]:
  """((L_G, L_D), terms) on the query set T(te) at ``params``.

  Args:
    loop: the inner loop (its ``spec`` is the GAN).
    params: {'G', 'D'}.
    task: {'support', 'query'} Pairs; only 'query' [q,...] is used.
    rng: the task's key; dropout draws from ``fold_in(rng, streams.QUERY_DROPOUT)``.
    frozen: never-trained arrays or None.

  Returns:
    ((L_G, L_D) scalars, dict of scalar terms 'g_loss', 'd_loss', 'l1', 'adv', 'perceptual').
  """
  terms = gan.gan_losses(loop.spec, params, task["query"],
                         jax.random.fold_in(rng, streams.QUERY_DROPOUT), frozen)
  return (terms["g_loss"], terms["d_loss"]), terms


def two_pullbacks(pullback: Callable, like: jax.Array) -> dict:
  """{'G': dL_G/dtheta_G, 'D': dL_D/dtheta_D} from the vjp ``pullback`` of (L_G, L_D).

  ``like`` is a scalar of the losses' dtype. The two pullbacks run one after the other,
  so that only one backward pass's buffers are live at a time (docs/benchmark.md compares
  the ``vmap``-ed alternative).
  """
  return split_by_player(*pull_both(pullback, like))


def pull_both(pullback: Callable, like: jax.Array) -> Tuple[Any, Any]:
  """(dL_G/dtheta, dL_D/dtheta), each over all of theta, from the vjp of (L_G, L_D)."""
  one, zero = jnp.ones_like(like), jnp.zeros_like(like)
  (dg,) = pullback((one, zero))
  (dd,) = pullback((zero, one))
  return dg, dd


def split_by_player(from_g: dict, from_d: dict) -> dict:
  """The G parts of ``from_g`` and the D parts of ``from_d``, for every key.

  ``from_g``/``from_d`` are shaped like the GP parameters: {'G', 'D'} and optional
  meta-parameters that are themselves {'G', 'D'} (Meta-SGD's rates): L_G's gradient
  trains G's part of each, L_D's gradient D's part.
  """
  out = {"G": from_g["G"], "D": from_d["D"]}
  for k in from_g:
    if k not in ("G", "D"):
      out[k] = {"G": from_g[k]["G"], "D": from_d[k]["D"]}
  return out


def standard_metrics(before: dict, after: dict, support: dict, grads: Any) -> dict:
  """Scalar diagnostics shared by every estimator.

  Args:
    before, after: query loss terms at theta and theta' (dicts of scalars).
    support: per-step support losses of the adaptation, each [K] (K >= 1).
    grads: the estimate, {'G', 'D'}.
  """
  m = {}
  for k in ("g_loss", "d_loss", "l1"):
    m[f"query_{k}_before"] = before[k]
    m[f"query_{k}_after"] = after[k]
    m[f"support_{k}_first"] = support[k][0]
    m[f"support_{k}_last"] = support[k][-1]
  m["grad_norm_G"] = optax.tree.norm(grads["G"])
  m["grad_norm_D"] = optax.tree.norm(grads["D"])
  return m


def query_gradients_at(loop: adapt_lib.InnerLoop, adapted: Any, task: dict, rng: jax.Array,
                       frozen: Any = None) -> Tuple[dict, dict]:
  """(g, terms): {'G': dL_G/dG', 'D': dL_D/dD'} at ``adapted`` (no differentiation
  through how ``adapted`` was reached), and the query terms there."""
  (lg, _), pullback, after = jax.vjp(lambda p: query_losses(loop, p, task, rng, frozen),
                                     jax.lax.stop_gradient(adapted), has_aux=True)
  return two_pullbacks(pullback, lg), after
