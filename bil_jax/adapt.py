"""IS adaptation (Sec. 3.2, Eq. 1; Alg. 1 lines 13-15; Alg. 2 lines 9-11).

K alternating GAN updates (D then G, :func:`bil_jax.gan.gan_step`) on a task's support
set T(tr), starting from the GP parameters, under ``lax.scan``. The inner optimizer is
any Optax ``GradientTransformation`` whose state is created fresh for every task; the
whole unroll is differentiable, so meta-gradients can flow through it. With
``remat=True`` each inner step is wrapped in ``jax.checkpoint``: the backward pass keeps
only the per-step carries (parameters and optimizer state), not the activations, so
activation memory does not grow with K.
"""
import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax

from bil_jax import gan


@dataclasses.dataclass(frozen=True)
class InnerLoop:
  """Static description of an IS adaptation.

  Attributes:
    spec: the GAN (modules, loss weights).
    optimizer: Optax transformation used for both G and D inner updates.
    steps: K, the number of GAN updates.
    remat: wrap each step in ``jax.checkpoint``.
    unroll: ``lax.scan``'s unroll (1: a loop; True: K copies of the step, which lets
      XLA's cost analysis count every step; the result is the same).
  """
  spec: gan.GanSpec
  optimizer: optax.GradientTransformation
  steps: int
  remat: bool = False
  unroll: int | bool = 1


def adapt(loop: InnerLoop, params: Any, support: gan.Pairs, rng: jax.Array,
          frozen: Any = None):
  """Adapts GP parameters to one task: theta' = Adapt_K(theta; T(tr)).

  Args:
    loop: the static inner loop.
    params: {'G', 'D'} GP parameters theta.
    support: Pairs with leading batch [n] (the n shots).
    rng: PRNG key; step k uses ``fold_in(rng, k)`` for dropout.
    frozen: never-trained arrays (VGG16 parameters) or None.

  Returns:
    (adapted_params, metrics) where metrics holds per-step support losses, each [K].
  """
  opt_state = gan.init_opt_state(loop.optimizer, params)

  def step(carry, k):
    p, s = carry
    p, s, m = gan.gan_step(loop.spec, loop.optimizer, p, s, support,
                           jax.random.fold_in(rng, k), frozen)
    return (p, s), m

  if loop.remat:
    step = jax.checkpoint(step)
  (params, _), metrics = jax.lax.scan(step, (params, opt_state), jnp.arange(loop.steps),
                                         unroll=loop.unroll)
  return params, metrics


def adapt_and_generate(loop: InnerLoop, params: Any, support: gan.Pairs, query: gan.Pairs,
                       rng: jax.Array, frozen: Any = None):
  """IS adaptation on ``support``, then generation for ``query`` (Alg. 2 lines 5-13).

  Returns:
    (fake [q,H,W,3] from the adapted G without dropout, adapted_params).
  """
  adapted, _ = adapt(loop, params, support, rng, frozen)
  return gan.generate(loop.spec, adapted["G"], query, rng, train=False), adapted
