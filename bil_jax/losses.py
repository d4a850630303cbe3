"""The objective of Sec. 4.2 (Eq. 4-7) as pure functions.

Conventions: images are float32 NHWC in [-1, 1]; discriminator outputs are logits.
Every function returns a scalar averaged over all of its elements.

Eq. 5 is written as a min-max game. The discriminator minimises
  L_D = -E[log D(x_S, y)] - E[log(1 - D(x_S, G(x_S, x_R)))]
and the generator minimises the non-saturating form -E[log D(x_S, G(x_S, x_R))]
(``gan_mode="bce"``); ``gan_mode="lsgan"`` replaces both by least squares.
"""
from typing import Sequence

import jax
import jax.numpy as jnp

GAN_MODES = ("bce", "lsgan")


def l1_loss(fake: jax.Array, real: jax.Array) -> jax.Array:
  """Eq. 4: mean absolute error. fake, real: [B,H,W,3] -> scalar."""
  return jnp.mean(jnp.abs(fake - real))


def discriminator_adversarial_loss(real_logits: jax.Array, fake_logits: jax.Array,
                                   gan_mode: str) -> jax.Array:
  """Eq. 5 from D's side. logits: [B,h,w,1] each -> scalar to minimise."""
  if gan_mode == "bce":
    # -log sigmoid(r) = softplus(-r);  -log(1 - sigmoid(f)) = softplus(f).
    return jnp.mean(jax.nn.softplus(-real_logits)) + jnp.mean(jax.nn.softplus(fake_logits))
  if gan_mode == "lsgan":
    return jnp.mean((real_logits - 1.0) ** 2) + jnp.mean(fake_logits ** 2)
  raise ValueError(f"loss.gan_mode={gan_mode!r} is not one of {GAN_MODES}")


def generator_adversarial_loss(fake_logits: jax.Array, gan_mode: str) -> jax.Array:
  """Eq. 5 from G's side (non-saturating). fake_logits: [B,h,w,1] -> scalar."""
  if gan_mode == "bce":
    return jnp.mean(jax.nn.softplus(-fake_logits))
  if gan_mode == "lsgan":
    return jnp.mean((fake_logits - 1.0) ** 2)
  raise ValueError(f"loss.gan_mode={gan_mode!r} is not one of {GAN_MODES}")


def perceptual_loss(fake_features: Sequence[jax.Array],
                    real_features: Sequence[jax.Array]) -> jax.Array:
  """Eq. 6: squared L2 distance of deep features, mean per layer, summed over layers.

  Args:
    fake_features, real_features: equal-length lists of [B,h_l,w_l,c_l] activations.
  """
  return sum(jnp.mean((f - r) ** 2) for f, r in zip(fake_features, real_features))


def total_generator_loss(l1: jax.Array, adversarial: jax.Array, perceptual: jax.Array,
                         lambda_l1: float, lambda_a: float, lambda_b: float) -> jax.Array:
  """Eq. 7 for G: lambda_l1*L1 + lambda_a*L_adv + lambda_b*L_P (scalars)."""
  return lambda_l1 * l1 + lambda_a * adversarial + lambda_b * perceptual
