"""``first_order``: query gradients at theta' applied to theta (Eq. 2 as printed; FOMAML)."""
from bil_jax.estimators import core


def first_order(loop, params, task, rng, frozen=None):
  """g = (dL_G/dG', dL_D/dD') at theta' = Adapt_K(theta). Returns (grads, metrics)."""
  adapted, support_m = core.adapt(loop, params, task["support"], rng, frozen)
  grads, after = core.query_gradients_at(loop, adapted, task, rng, frozen)
  _, before = core.query_losses(loop, params, task, rng, frozen)
  return grads, core.standard_metrics(before, after, support_m, grads)
