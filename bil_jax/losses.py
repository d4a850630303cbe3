"""The objective of Sec. 4.2 (Eq. 4-7) as pure functions.

Conventions: images are float32 NHWC in [-1, 1]; discriminator outputs are logits.
Every function returns a scalar averaged over all of its elements.

Eq. 5 is written as a min-max game. The discriminator minimises
  L_D = -E[log D(x_S, y)] - E[log(1 - D(x_S, G(x_S, x_R)))]
and the generator minimises the non-saturating form -E[log D(x_S, G(x_S, x_R))]
(``gan_mode="bce"``); ``gan_mode="lsgan"`` replaces both by least squares.

Eq. 6, the perceptual loss L_P, comes in two kinds (``loss.perceptual``):
  "lpips_vgg": LPIPS v0.1 with the VGG16 trunk, the paper's definition (channel-normalised
               relu1_2 ... relu5_3 features, squared difference weighted by the learned
               linear heads, spatial mean, sum over layers; ``bil_jax.models.lpips``);
  "vgg_mse":   mean squared difference of the raw VGG16 activations at the same five
               layers, summed over layers (no normalisation, no learned weights).
Both take the frozen weights as an explicit argument (see ``load_perceptual_weights``).
"""
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

from bil_jax.models import lpips as lpips_lib
from bil_jax.models import vgg

GAN_MODES = ("bce", "lsgan")
PERCEPTUAL_KINDS = ("lpips_vgg", "vgg_mse")


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


def feature_mse(fake_features: Sequence[jax.Array],
                real_features: Sequence[jax.Array]) -> jax.Array:
  """Squared L2 distance of deep features, mean per layer, summed over layers.

  Args:
    fake_features, real_features: equal-length lists of [B,h_l,w_l,c_l] activations.
  """
  return sum(jnp.mean((f - r) ** 2) for f, r in zip(fake_features, real_features))


def vgg_mse_loss(frozen: Any, fake: jax.Array, real: jax.Array) -> jax.Array:
  """Eq. 6, kind "vgg_mse". frozen: VGG16 params; fake, real: [B,H,W,3] -> scalar."""
  return feature_mse(vgg.vgg16_features(frozen, fake), vgg.vgg16_features(frozen, real))


def lpips_vgg_loss(frozen: Any, fake: jax.Array, real: jax.Array) -> jax.Array:
  """Eq. 6, kind "lpips_vgg": batch mean of LPIPS-VGG v0.1. fake, real: [B,H,W,3] -> scalar.

  frozen: LPIPS-VGG variables {'params': {'trunk', 'lin0'..'lin4'}}.
  """
  return lpips_lib.lpips_loss(frozen, fake, real, net="vgg")


_PERCEPTUAL_FNS = {"lpips_vgg": lpips_vgg_loss, "vgg_mse": vgg_mse_loss}


def check_perceptual(kind: str) -> str:
  """Returns ``kind`` if it is a perceptual-loss kind, else a one-line ValueError."""
  if kind not in _PERCEPTUAL_FNS:
    raise ValueError(f"loss.perceptual={kind!r} is not one of {list(PERCEPTUAL_KINDS)}")
  return kind


def perceptual_loss(kind: str, frozen: Any, fake: jax.Array, real: jax.Array) -> jax.Array:
  """Eq. 6 of ``kind`` ("lpips_vgg" | "vgg_mse"). fake, real: [B,H,W,3] in [-1,1] -> scalar.

  Gradients flow to ``fake`` only (the weights and ``real`` are constants).
  """
  fn: Callable[[Any, jax.Array, jax.Array], jax.Array] = _PERCEPTUAL_FNS[check_perceptual(kind)]
  if frozen is None:
    raise ValueError(f"loss.perceptual={kind!r} with loss.lambda_b > 0 needs its frozen "
                     "weights (loss.vgg_weights) passed as `frozen`")
  return fn(frozen, fake, real)


def load_perceptual_weights(kind: str, path: str) -> Any:
  """The frozen weights of Eq. 6 of ``kind`` from the file ``path`` (``loss.vgg_weights``).

  "lpips_vgg" needs the LPIPS-VGG file of ``data_prep/convert_lpips_weights.py --net=vgg``;
  "vgg_mse" takes the VGG16 file of ``data_prep/convert_torch_weights.py`` (or the
  trunk of an LPIPS-VGG file). Every error is one line naming ``loss.vgg_weights``,
  the file and the command that makes it.
  """
  check_perceptual(kind)
  command = (lpips_lib.CONVERT_COMMANDS["vgg"] if kind == "lpips_vgg" else vgg.CONVERT_HINT.replace(
      "{path}", "PATH"))
  if not path:
    raise ValueError(
        f"loss.perceptual={kind!r} with loss.lambda_b > 0 needs weights but "
        f"loss.vgg_weights is empty; create them with `{command.replace('PATH', 'W.msgpack')}` "
        "and set --config.loss.vgg_weights=W.msgpack (or --config.loss.lambda_b=0)")
  try:
    if kind == "lpips_vgg":
      return lpips_lib.load_lpips_params(path, net="vgg")
    return vgg.load_vgg16_params(path)
  except (FileNotFoundError, ValueError) as e:
    raise type(e)(f"loss.vgg_weights (loss.perceptual={kind!r}): {e}") from None


def total_generator_loss(l1: jax.Array, adversarial: jax.Array, perceptual: jax.Array,
                         lambda_l1: float, lambda_a: float, lambda_b: float) -> jax.Array:
  """Eq. 7 for G: lambda_l1*L1 + lambda_a*L_adv + lambda_b*L_P (scalars)."""
  return lambda_l1 * l1 + lambda_a * adversarial + lambda_b * perceptual
