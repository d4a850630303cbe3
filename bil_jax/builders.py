"""Builds an experiment's pieces from its config: the GAN, optimizers, frozen weights.

The one reader of the model, loss and optimizer keys (``config.model``, ``config.loss``,
``config.optim``, ``config.meta.{inner,outer}_optimizer``, ``config.eval.aux_lr``); the
training, meta-training, evaluation and benchmark code receive the results. Models come
from the name -> module table ``bil_jax.models.GENERATORS``; optimizers are Optax names
plus keyword arguments (:mod:`bil_jax.optimizers`).
"""
from typing import Any, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import optax

from bil_jax import adapt, gan, losses, models, optimizers
from bil_jax.data import loading


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
  hw = loading.image_hw(config)
  return gan.GanSpec(generator=models.build_generator(config.model, num_classes, hw),
                     discriminator=models.build_discriminator(config.model, num_classes),
                     num_classes=num_classes, uses_reference=models.uses_reference(config.model),
                     lambda_l1=float(config.loss.lambda_l1), lambda_a=float(config.loss.lambda_a),
                     lambda_b=float(config.loss.lambda_b), gan_mode=config.loss.gan_mode,
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


def pretrain_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """``config.optim``: conventional training of G and D (Sec. 5.3: Adam 1e-4, 0.5, 0.999)."""
  return optimizers.from_spec(config.optim, "optim")


def outer_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """``config.meta.outer_optimizer``: the GP update of meta-training (Sec. 5.3: Adam)."""
  return optimizers.from_spec(config.meta.outer_optimizer, "meta.outer_optimizer")


def aux_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Aux fine-tuning of the GP (Alg. 2 lines 2-4): the outer optimizer, with its learning
  rate replaced by ``eval.aux_lr`` when that is >= 0."""
  spec = config.meta.outer_optimizer.to_dict()
  if config.eval.aux_lr >= 0:
    spec["lr"] = float(config.eval.aux_lr)
  return optimizers.from_spec(spec, "meta.outer_optimizer")


def inner_loop(config: ml_collections.ConfigDict, spec: gan.GanSpec, steps: int = -1,
               lr: Any = None) -> adapt.InnerLoop:
  """The IS adaptation of ``config.meta`` (``steps`` overrides meta.inner_steps, ``lr``
  the inner optimizer's learning rate: a float or a traced scalar)."""
  opt_spec = config.meta.inner_optimizer.to_dict()
  if lr is not None:
    opt_spec["lr"] = lr
  opt = optimizers.from_spec(opt_spec, "meta.inner_optimizer")
  return adapt.InnerLoop(spec, opt, config.meta.inner_steps if steps < 0 else steps,
                         adapt.remat_mode(config.meta.remat),
                         adapt_mask=adapt_mask_patterns(config))


def adapt_mask_patterns(config: ml_collections.ConfigDict) -> tuple:
  """``meta.adapt_mask`` ("G/*,D/Conv_4/*") as a tuple of fnmatch patterns; () = all."""
  return tuple(p.strip() for p in str(config.meta.adapt_mask).split(",") if p.strip())
