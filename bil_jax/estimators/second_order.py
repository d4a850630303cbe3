"""``second_order``: the exact meta-gradient through the whole unrolled adaptation.

g_G = dL_G(theta'; T(te))/dtheta_G and g_D = dL_D(theta'; T(te))/dtheta_D with
theta' = Adapt_K(theta; T(tr)), differentiated through the joint G/D unroll: one
forward unroll, two pullbacks (``jax.vjp``).
"""
import jax

from bil_jax.estimators import core


def second_order(loop, params, task, rng, frozen=None):
  """Exact meta-gradient (one unroll, two pullbacks). Returns (grads, metrics)."""

  def meta_losses(theta):
    adapted, support_m = core.adapt(loop, theta, task["support"], rng, frozen)
    losses, terms = core.query_losses(loop, adapted, task, rng, frozen)
    return losses, (terms, support_m)

  (lg, _), pullback, (after, support_m) = jax.vjp(meta_losses, params, has_aux=True)
  grads = core.two_pullbacks(pullback, lg)
  _, before = core.query_losses(loop, params, task, rng, frozen)
  return grads, core.standard_metrics(before, after, support_m, grads)
