"""``reptile``: the direction theta - theta' (the outer optimizer treats it as a gradient)."""
import jax

from bil_jax.estimators import core


def reptile(loop, params, task, rng, frozen=None):
  """g = theta - Adapt_K(theta). Returns (grads, metrics)."""
  adapted, support_m = core.adapt(loop, params, task["support"], rng, frozen)
  grads = jax.tree.map(lambda a, b: a - b, params, adapted)
  _, after = core.query_losses(loop, adapted, task, rng, frozen)
  _, before = core.query_losses(loop, params, task, rng, frozen)
  return grads, core.standard_metrics(before, after, support_m, grads)
