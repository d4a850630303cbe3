"""``es``: antithetic evolution strategies over the whole unroll (zero-order).

For P perturbation pairs eps_i ~ N(0, I) over G and D jointly (learned_optimization's
FullES), with f(theta) = (L_G, L_D)(Adapt_K(theta); T(te)):

  g_G = 1/P sum_i (f_G(theta + sigma eps_i) - f_G(theta - sigma eps_i)) / (2 sigma) eps_i,G
  g_D likewise with f_D and eps_i,D.

This estimates the gradient of the Gaussian-smoothed meta-losses. Forward passes only
(no backward pass through the unroll, so memory does not grow with K); the 2P
perturbed unrolls are ``vmap``-ed in chunks of :data:`ES_CHUNK`.
"""
import jax
import jax.numpy as jnp

from bil_jax.estimators import core

# Perturbations draw from their own stream of the task's key.
ES_STREAM = 2 ** 20 + 1
# Perturbed unrolls evaluated at once (lax.map's batch size).
ES_CHUNK = 64


def _normal_like(rng: jax.Array, tree):
  """Standard normal noise shaped like ``tree`` (one key per leaf)."""
  leaves, treedef = jax.tree.flatten(tree)
  keys = jax.random.split(rng, len(leaves))
  return treedef.unflatten([jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves)])


def es(loop, params, task, rng, frozen=None, *, pairs: int = 8, sigma: float = 0.01):
  """Antithetic ES estimate of (g_G, g_D) with ``pairs`` pairs of scale ``sigma``."""
  if pairs < 1 or sigma <= 0:
    raise ValueError(f"meta.estimator_options pairs={pairs}, sigma={sigma}: need pairs >= 1 "
                     "and sigma > 0")
  keys = jax.random.split(jax.random.fold_in(rng, ES_STREAM), pairs)
  eps = jax.vmap(lambda k: _normal_like(k, params))(keys)  # [P, ...]

  def losses_at(theta):
    adapted, _ = core.adapt(loop, theta, task["support"], rng, frozen)
    (lg, ld), _ = core.query_losses(loop, adapted, task, rng, frozen)
    return jnp.stack([lg, ld])

  shifted = lambda sign: jax.tree.map(lambda p, e: p + sign * sigma * e, params, eps)
  both = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), shifted(1.0), shifted(-1.0))
  # vmap-ed in chunks: one vmap over thousands of perturbed unrolls ran 15x slower per
  # unroll on CPU than chunks of 64 (and holds all of their activations at once).
  f = jax.lax.map(losses_at, both, batch_size=min(2 * pairs, ES_CHUNK))  # [2P, 2]
  diff = (f[:pairs] - f[pairs:]) / (2.0 * sigma)  # [P, 2]
  weigh = lambda w: jax.tree.map(lambda e: jnp.tensordot(w, e, axes=1) / pairs, eps)
  grads = core.split_by_player(weigh(diff[:, 0]), weigh(diff[:, 1]))
  adapted, support_m = core.adapt(loop, params, task["support"], rng, frozen)
  _, after = core.query_losses(loop, adapted, task, rng, frozen)
  _, before = core.query_losses(loop, params, task, rng, frozen)
  metrics = core.standard_metrics(before, after, support_m, grads)
  metrics["es_loss_spread"] = jnp.std(f[:, 0])
  return grads, metrics
