"""Meta-gradient estimators for the GP parameters (Sec. 3.2, Eq. 2).

Every estimator has one signature::

    estimator(loop, params, task, rng, frozen) -> (grads, metrics)

with ``loop`` an :class:`bil_jax.adapt.InnerLoop`, ``params = {'G', 'D'}`` the GP
parameters theta, ``task = {'support': Pairs, 'query': Pairs}`` one episode, ``grads``
shaped like ``params`` (a descent direction for the outer optimizer) and ``metrics`` a
dict of scalars. New estimators register with :func:`register` and are chosen by name
(``config.meta.estimator``). With theta' = Adapt_K(theta; T(tr)):

* ``second_order``: g_G = d L_G(theta'; T(te)) / d theta_G and
  g_D = d L_D(theta'; T(te)) / d theta_D, differentiated through the whole unrolled joint
  G/D adaptation: one forward unroll, two pullbacks (``jax.vjp``).
* ``first_order``: the same query gradients taken at theta' and applied to theta
  (Eq. 2 as printed; first-order MAML).
* ``reptile``: g = theta - theta'.
"""
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from bil_jax import adapt as adapt_lib
from bil_jax import gan

Estimator = Callable[..., tuple]
_REGISTRY: dict = {}

# Query losses use their own dropout stream, disjoint from the inner steps' fold_in(rng, k).
_QUERY_STREAM = 2**20


def register(name: str):
  """Decorator: makes an estimator selectable as ``config.meta.estimator = name``."""
  def wrap(fn):
    _REGISTRY[name] = fn
    return fn
  return wrap


def get(name: str) -> Estimator:
  """Looks up a registered estimator; a one-line error names the key if unknown."""
  if name not in _REGISTRY:
    raise ValueError(f"meta.estimator={name!r} is not one of {sorted(_REGISTRY)}")
  return _REGISTRY[name]


def names() -> list:
  return sorted(_REGISTRY)


def _query_losses(loop, params, task, rng, frozen):
  """(L_G, L_D) on T(te) at ``params`` plus all loss terms."""
  terms = gan.gan_losses(loop.spec, params, task["query"],
                         jax.random.fold_in(rng, _QUERY_STREAM), frozen)
  return (terms["g_loss"], terms["d_loss"]), terms


def _two_pullbacks(pullback, like):
  """{'G': d L_G / d theta_G, 'D': d L_D / d theta_D} from the vjp of (L_G, L_D).

  Two sequential pullbacks. (Pulling both cotangents back in one ``vmap``-ed pass halves
  the ops but kept both backward passes' buffers live: +10% peak memory at torch_ref_32
  and no faster on CPU, so it is not done; docs/benchmark.md.)
  """
  one, zero = jnp.ones_like(like), jnp.zeros_like(like)
  (dg,) = pullback((one, zero))
  (dd,) = pullback((zero, one))
  return {"G": dg["G"], "D": dd["D"]}


def _metrics(before: dict, after: dict, support: dict, grads: Any) -> dict:
  """Scalar diagnostics shared by every estimator."""
  m = {}
  for k in ("g_loss", "d_loss", "l1"):
    m[f"query_{k}_before"] = before[k]
    m[f"query_{k}_after"] = after[k]
    m[f"support_{k}_first"] = support[k][0]
    m[f"support_{k}_last"] = support[k][-1]
  m["grad_norm_G"] = optax.tree.norm(grads["G"])
  m["grad_norm_D"] = optax.tree.norm(grads["D"])
  return m


@register("second_order")
def second_order(loop: adapt_lib.InnerLoop, params, task, rng, frozen=None):
  """Exact meta-gradient through the unrolled adaptation (one unroll, two pullbacks)."""
  def meta_losses(theta):
    adapted, support_m = adapt_lib.adapt(loop, theta, task["support"], rng, frozen)
    losses, terms = _query_losses(loop, adapted, task, rng, frozen)
    return losses, (terms, support_m)

  (lg, ld), pullback, (after, support_m) = jax.vjp(meta_losses, params, has_aux=True)
  grads = _two_pullbacks(pullback, lg)
  _, before = _query_losses(loop, params, task, rng, frozen)
  return grads, _metrics(before, after, support_m, grads)


@register("first_order")
def first_order(loop: adapt_lib.InnerLoop, params, task, rng, frozen=None):
  """Query gradients at theta' (no differentiation through the adaptation)."""
  adapted, support_m = adapt_lib.adapt(loop, params, task["support"], rng, frozen)
  adapted = jax.lax.stop_gradient(adapted)
  (lg, ld), pullback, after = jax.vjp(
      lambda p: _query_losses(loop, p, task, rng, frozen), adapted, has_aux=True)
  grads = _two_pullbacks(pullback, lg)
  _, before = _query_losses(loop, params, task, rng, frozen)
  return grads, _metrics(before, after, support_m, grads)


@register("reptile")
def reptile(loop: adapt_lib.InnerLoop, params, task, rng, frozen=None):
  """Reptile direction theta - theta' (the outer optimizer treats it as a gradient)."""
  adapted, support_m = adapt_lib.adapt(loop, params, task["support"], rng, frozen)
  grads = jax.tree.map(lambda a, b: a - b, params, adapted)
  _, after = _query_losses(loop, adapted, task, rng, frozen)
  _, before = _query_losses(loop, params, task, rng, frozen)
  return grads, _metrics(before, after, support_m, grads)
