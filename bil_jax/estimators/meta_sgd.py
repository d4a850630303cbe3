"""``meta_sgd``: per-parameter inner learning rates as meta-parameters (Li et al. 2017).

The GP state carries, next to G and D, ``inner_lr_scale`` = {'G': s_G, 'D': s_D} shaped
like the networks. Every inner update of a parameter is multiplied elementwise by its
s, so its effective rate is alpha = s * meta.inner_optimizer's rate; s starts at 1
(alpha = the configured inner rate). The meta-gradient is the exact second-order one,
taken in G, D and s together: s_G learns from L_G(theta'; T(te)), s_D from L_D. The
rates are updated by the outer optimizer, checkpointed, and used by every later
adaptation of this GP (Aux fine-tuning and IS adaptation at test time).
"""
import jax
import jax.numpy as jnp

from bil_jax import adapt as adapt_lib
from bil_jax.estimators.second_order import second_order


def init_meta_parameters(params: dict) -> dict:
  """``params`` plus Meta-SGD's scales (ones) when it has none yet."""
  if adapt_lib.UPDATE_SCALE in params:
    return params
  nets = adapt_lib.networks(params)
  return dict(params, **{adapt_lib.UPDATE_SCALE: jax.tree.map(jnp.ones_like, nets)})


def meta_sgd(loop, params, task, rng, frozen=None):
  """Second-order meta-gradient of G, D and their per-parameter inner rates."""
  if adapt_lib.UPDATE_SCALE not in params:
    raise ValueError(f"meta_sgd: the GP parameters have no {adapt_lib.UPDATE_SCALE!r} "
                     "(create them with estimators.init_meta_parameters)")
  grads, metrics = second_order(loop, params, task, rng, frozen)
  scale = params[adapt_lib.UPDATE_SCALE]
  for net in adapt_lib.NETS:
    metrics[f"inner_lr_scale_mean_{net}"] = jnp.mean(
        jnp.stack([jnp.mean(x) for x in jax.tree.leaves(scale[net])]))
  return grads, metrics


meta_sgd.init_meta_parameters = init_meta_parameters
