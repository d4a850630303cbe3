"""Builds an experiment's pieces from its config: the GAN, optimizers, frozen weights.

These are the only places that read ``config.model``, ``config.loss`` and
``config.optim``; the training, meta-training and evaluation code receive the results.
"""
import functools
from typing import Any, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import optax

from bil_jax import adapt, gan, losses, models
from bil_jax.data import loading


image_hw = loading.image_hw


def load_frozen(config: ml_collections.ConfigDict) -> Any:
  """The never-trained weights of the perceptual term of kind ``loss.perceptual`` (read
  from ``loss.vgg_weights``) when lambda_b > 0, else None.

  Raises a one-line error naming ``loss.vgg_weights`` and the converter command when
  the file is not configured, missing or of the wrong kind.
  """
  if not config.loss.lambda_b:
    return None
  return losses.load_perceptual_weights(config.loss.perceptual, config.loss.vgg_weights)


def build_spec(config: ml_collections.ConfigDict, num_classes: int) -> gan.GanSpec:
  """The GAN of ``config.model`` with the loss weights of ``config.loss``."""
  hw = image_hw(config)
  return gan.GanSpec(
      generator=models.build_generator(config.model, num_classes, hw),
      discriminator=models.build_discriminator(config.model, num_classes),
      num_classes=num_classes,
      uses_reference=config.model.name == "pg2",
      lambda_l1=float(config.loss.lambda_l1),
      lambda_a=float(config.loss.lambda_a),
      lambda_b=float(config.loss.lambda_b),
      gan_mode=config.loss.gan_mode,
      perceptual=losses.check_perceptual(config.loss.perceptual))


def init_params(spec: gan.GanSpec, seed: int, hw: Tuple[int, int]) -> dict:
  """Random {'G', 'D'} parameters for images of size hw, a function of ``seed``.

  Initialisation is jitted and draws from an ``rbg`` key: compiling threefry sampling for
  every parameter takes tens of seconds on a CPU, rbg a few.
  """
  @jax.jit
  def init(key):
    kg, kd, kdrop = jax.random.split(key, 3)
    x = jnp.zeros((1, *hw, spec.generator.in_channels), jnp.float32)
    s = jnp.zeros((1, *hw, spec.num_classes), jnp.float32)
    g = spec.generator.init({"params": kg, "dropout": kdrop}, x, train=True)["params"]
    d = spec.discriminator.init(kd, s, jnp.zeros((1, *hw, 3), jnp.float32))["params"]
    return {"G": g, "D": d}

  return jax.device_get(init(jax.random.key(seed, impl="rbg")))


def gan_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """The optimizer of conventional training (Sec. 5.3: Adam 1e-4, b1 0.5, b2 0.999)."""
  return optax.adam(config.optim.lr, b1=config.optim.b1, b2=config.optim.b2)


def inner_loop(config: ml_collections.ConfigDict, spec: gan.GanSpec,
               steps: int = -1) -> adapt.InnerLoop:
  """The IS adaptation of ``config.meta`` (``steps`` overrides meta.inner_steps)."""
  opt = adapt.make_inner_optimizer(config.meta.inner_optimizer, config.meta.inner_lr,
                                   b1=config.optim.b1, b2=config.optim.b2)
  return adapt.InnerLoop(spec, opt, config.meta.inner_steps if steps < 0 else steps,
                         bool(config.meta.remat))
