"""``truncated``: backpropagation through only the last T of the K inner steps.

The first K - T steps run forward only; their result enters the differentiated tail as
theta_{K-T} = theta + stop_gradient(theta_{K-T} - theta) (its inner optimizer state
is a constant; computed as theta_{K-T} + (theta - stop_gradient(theta)), which has the
same derivative and the forward value theta_{K-T} bit for bit). T = K is ``second_order`` and T = 0 is ``first_order``, exactly.
Memory of the backward pass grows with T, not K.
"""
import jax

from bil_jax import gan
from bil_jax.estimators import core


def truncated(loop, params, task, rng, frozen=None, *, backprop_steps: int = 1):
  """Meta-gradient through the last ``backprop_steps`` (T, 0 <= T <= K) inner steps."""
  k, t = loop.steps, int(backprop_steps)
  if not 0 <= t <= k:
    raise ValueError(f"meta.estimator_options backprop_steps={t} is not in [0, K={k}] "
                     "(K = meta.inner_steps)")
  support = task["support"]
  head_p, head_s, head_m = core.run_steps(loop, params, gan.init_opt_state(loop.optimizer, params),
                                          support, rng, frozen, first_step=0, num_steps=k - t)
  head_p, head_s = jax.lax.stop_gradient((head_p, head_s))

  def meta_losses(theta):
    start = jax.tree.map(lambda th, h: h + (th - jax.lax.stop_gradient(th)), theta, head_p)
    adapted, _, tail_m = core.run_steps(loop, start, head_s, support, rng, frozen, first_step=k - t,
                                        num_steps=t, anchor=theta)
    losses, terms = core.query_losses(loop, adapted, task, rng, frozen)
    return losses, (terms, tail_m)

  (lg, _), pullback, (after, tail_m) = jax.vjp(meta_losses, params, has_aux=True)
  grads = core.two_pullbacks(pullback, lg)
  support_m = jax.tree.map(lambda a, b: jax.numpy.concatenate([a, b]), head_m, tail_m)
  _, before = core.query_losses(loop, params, task, rng, frozen)
  return grads, core.standard_metrics(before, after, support_m, grads)
