"""One GAN update (D step, then G step) as a pure function.

Pre-training (Alg. 1 lines 1-5), IS adaptation (lines 13-15; Alg. 2 lines 9-11) and Aux
fine-tuning all use :func:`gan_step`. Parameters are the pytree ``{'G': ..., 'D': ...}``;
the optimizer state is ``{'G': ..., 'D': ...}`` for one Optax transformation shared by both
networks (each network has its own state).

A batch of ``Pairs`` is a dict
  'map':   int32   [B,H,W]    class ids (the structure input x_S),
  'image': float32 [B,H,W,3]  target y in [-1,1],
  'ref':   float32 [B,H,W,3]  reference image x_R in [-1,1] (used by PG² only).

``frozen`` is a pytree of arrays that are never trained (the weights of the perceptual
loss of kind ``GanSpec.perceptual``: LPIPS-VGG variables or VGG16 params; or ``None``).
It is passed explicitly rather than closed over so that large weights are not baked
into compiled programs as constants.

A task's pairs may be split over a mesh axis (``GanSpec.batch_axis``, set by
``bil_jax.meta`` inside ``shard_map``): every loss here is then the mean over the whole
batch (``lax.pmean`` of the per-device means, :func:`batch_mean`), so gradients taken of
it in parameters that are the same on every device of the axis are the averaged
gradients of the whole batch (JAX sums the cotangents of such parameters over the axis),
and the models see the axis (batch norm, dropout: ``bil_jax.models.batch_split``).
"""
import dataclasses
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from bil_jax import losses
from bil_jax.models import batch_split

Params = Any
Pairs = dict


@dataclasses.dataclass(frozen=True)
class GanSpec:
  """Everything static about a conditional GAN: modules and loss weights.

  Attributes:
    generator: Flax module, apply(vars, x [B,H,W,Cin], train, rngs) -> [B,H,W,3].
    discriminator: Flax module, apply(vars, structure [B,H,W,C], image [B,H,W,3])
      -> logits [B,h,w,1].
    num_classes: C, the number of segmentation classes.
    uses_reference: True for PG² (generator input is [ref, one-hot map]).
    lambda_l1, lambda_a, lambda_b: weights of Eq. 7.
    gan_mode: "bce" or "lsgan".
    perceptual: kind of Eq. 6, "lpips_vgg" | "vgg_mse" (see ``bil_jax.losses``); used
      when lambda_b > 0, with its weights passed as ``frozen``.
    batch_axis: the mesh axis the pairs of a batch are split over (inside ``shard_map``),
      or None (the whole batch is on this device; every function is then exactly the
      single-device one).
  """
  generator: nn.Module
  discriminator: nn.Module
  num_classes: int
  uses_reference: bool
  lambda_l1: float = 1.0
  lambda_a: float = 10.0
  lambda_b: float = 0.0
  gan_mode: str = "bce"
  perceptual: str = "lpips_vgg"
  batch_axis: Optional[str] = None


def batch_mean(spec: GanSpec, x: jax.Array) -> jax.Array:
  """A per-device batch mean (scalar) -> the mean over the whole batch (equal blocks)."""
  return x if spec.batch_axis is None else jax.lax.pmean(x, spec.batch_axis)


def apply_model(spec: GanSpec, module: nn.Module, *args, **kwargs):
  """``module.apply(*args, **kwargs)`` traced for this device's rows of the batch."""
  with batch_split.batch_axis(spec.batch_axis):
    return module.apply(*args, **kwargs)


def structure_input(spec: GanSpec, pairs: Pairs) -> jax.Array:
  """One-hot structure map x_S: [B,H,W] ids -> [B,H,W,C], in the dtype of the images."""
  return jax.nn.one_hot(pairs["map"], spec.num_classes, dtype=pairs["image"].dtype)


def generator_input(spec: GanSpec, pairs: Pairs) -> jax.Array:
  """G's input: one-hot map (Pix2pix) or [reference, one-hot map] (PG²). -> [B,H,W,Cin]."""
  s = structure_input(spec, pairs)
  if spec.uses_reference:
    return jnp.concatenate([pairs["ref"], s], axis=-1)
  return s


def generate(spec: GanSpec, g_params: Params, pairs: Pairs, rng: jax.Array,
             train: bool = True) -> jax.Array:
  """G(x_S, x_R): [B,H,W,3]. ``train`` enables dropout, driven by ``rng``."""
  return apply_model(spec, spec.generator, {"params": g_params}, generator_input(spec, pairs),
                     train=train, rngs={"dropout": rng} if train else None)


def real_and_fake_logits(spec: GanSpec, d_params: Params, pairs: Pairs, fake: jax.Array) -> tuple:
  """D's logits on the real images of ``pairs`` and on ``fake`` [B,H,W,3], in one D call.

  The two image sets are ``vmap``-ed, so each keeps its own normalisation statistics (the
  result equals two separate calls, for batch norm too) while every convolution runs once
  on twice the batch. Returns (real_logits, fake_logits), each [B,h,w,1].
  """
  s = structure_input(spec, pairs)
  logits = jax.vmap(lambda y: apply_model(spec, spec.discriminator, {"params": d_params}, s, y))(
      jnp.stack([pairs["image"], fake]))
  return logits[0], logits[1]


def discriminator_loss_on(spec: GanSpec, d_params: Params, pairs: Pairs,
                          fake: jax.Array) -> jax.Array:
  """L_D given generated images ``fake`` [B,H,W,3] -> scalar."""
  return batch_mean(
      spec,
      losses.discriminator_adversarial_loss(*real_and_fake_logits(spec, d_params, pairs, fake),
                                            spec.gan_mode))


def generator_loss_terms_from_logits(spec: GanSpec, pairs: Pairs, fake: jax.Array,
                                     fake_logits: jax.Array, frozen: Any) -> dict:
  """Eq. 4-7 for G given ``fake`` [B,H,W,3] and D's logits on it [B,h,w,1].

  Returns a dict of scalars 'l1', 'adv', 'perceptual', 'g_loss'.
  """
  l1 = batch_mean(spec, losses.l1_loss(fake, pairs["image"]))
  adv = batch_mean(spec, losses.generator_adversarial_loss(fake_logits, spec.gan_mode))
  if spec.lambda_b:
    perceptual = batch_mean(spec,
                            losses.perceptual_loss(spec.perceptual, frozen, fake, pairs["image"]))
  else:
    perceptual = jnp.zeros((), fake.dtype)
  total = losses.total_generator_loss(l1, adv, perceptual, spec.lambda_l1, spec.lambda_a,
                                      spec.lambda_b)
  return {"l1": l1, "adv": adv, "perceptual": perceptual, "g_loss": total}


def generator_loss_terms(spec: GanSpec, d_params: Params, pairs: Pairs, fake: jax.Array,
                         frozen: Any) -> dict:
  """Eq. 4-7 for G given ``fake`` [B,H,W,3]: dict of scalars 'l1', 'adv', 'perceptual', 'g_loss'."""
  fake_logits = apply_model(spec, spec.discriminator, {"params": d_params},
                            structure_input(spec, pairs), fake)
  return generator_loss_terms_from_logits(spec, pairs, fake, fake_logits, frozen)


def gan_losses(spec: GanSpec, params: Params, pairs: Pairs, rng: jax.Array,
               frozen: Any = None) -> dict:
  """Both losses of Eq. 7 at ``params`` on ``pairs`` with one G pass and one D call.

  Returns a dict of scalars: 'g_loss' (L_G), 'd_loss' (L_D), 'l1', 'adv', 'perceptual'.
  Both are differentiable in all of ``params`` (no stop_gradient), which the
  second-order meta-gradient needs. D's logits on the fake images serve both losses.
  """
  fake = generate(spec, params["G"], pairs, rng)
  real_logits, fake_logits = real_and_fake_logits(spec, params["D"], pairs, fake)
  terms = generator_loss_terms_from_logits(spec, pairs, fake, fake_logits, frozen)
  terms["d_loss"] = batch_mean(
      spec, losses.discriminator_adversarial_loss(real_logits, fake_logits, spec.gan_mode))
  return terms


def init_opt_state(opt: optax.GradientTransformation, params: Params) -> dict:
  """Fresh optimizer state {'G': ..., 'D': ...} for ``params``."""
  return {"G": opt.init(params["G"]), "D": opt.init(params["D"])}


def _add_penalty_grad(grads, penalty, net: str, p, anchor):
  """``grads`` plus the gradient of ``penalty(net, p, anchor)`` in ``p`` (if any)."""
  if penalty is None:
    return grads
  extra = jax.grad(lambda q: penalty(net, q, anchor[net]))(p)
  return jax.tree.map(jnp.add, grads, extra)


def _scaled(updates, scale, net: str):
  """``updates`` times the elementwise ``scale[net]`` (Meta-SGD rates), if given."""
  return updates if scale is None else jax.tree.map(jnp.multiply, updates, scale[net])


def gan_step(spec: GanSpec, opt: optax.GradientTransformation, params: Params, opt_state: dict,
             pairs: Pairs, rng: jax.Array, frozen: Any = None, *,
             penalty: Optional[Callable] = None, anchor: Optional[Params] = None,
             update_scale: Optional[Params] = None):
  """One alternating GAN update on ``pairs``: D step, then G step (Eq. 7).

  The generator runs once: its output feeds the D step and, since G has not changed
  in between, is reused by the G step, whose gradient is pulled back through G with
  ``jax.vjp`` (as PyTorch pix2pix reuses ``fake_B``). Dropout uses ``rng``.

  Hooks for meta-learning variants (all off by default; pre-training uses none):
    penalty: ``(net, p, anchor_p) -> scalar`` added to that network's inner loss (e.g. the
      proximal term (lambda/2)||p - anchor_p||^2 of implicit MAML); ``anchor``
      {'G', 'D'} is its reference point.
    update_scale: {'G', 'D'} trees shaped like the parameters; each network's optimizer
      update is multiplied by it elementwise (Meta-SGD's per-parameter rates).

  Returns:
    (new_params, new_opt_state, metrics) with scalar metrics 'd_loss', 'g_loss', 'l1',
    'adv', 'perceptual'. 'd_loss' is measured before the D step, the G terms after it.
  """
  fake, g_pullback = jax.vjp(lambda g: generate(spec, g, pairs, rng), params["G"])

  d_loss, d_grads = jax.value_and_grad(lambda d: discriminator_loss_on(spec, d, pairs, fake))(
      params["D"])
  d_grads = _add_penalty_grad(d_grads, penalty, "D", params["D"], anchor)
  # Each update also gets the losses it has seen: a guarded optimizer
  # (bil_jax.nonfinite) skips it when they are not finite; others ignore them.
  opt = optax.with_extra_args_support(opt)
  d_updates, d_state = opt.update(d_grads, opt_state["D"], params["D"], losses=d_loss)
  new_d = optax.apply_updates(params["D"], _scaled(d_updates, update_scale, "D"))

  def g_loss_of_fake(f):
    terms = generator_loss_terms(spec, new_d, pairs, f, frozen)
    return terms["g_loss"], terms

  (_, terms), fake_grad = jax.value_and_grad(g_loss_of_fake, has_aux=True)(fake)
  (g_grads,) = g_pullback(fake_grad)
  g_grads = _add_penalty_grad(g_grads, penalty, "G", params["G"], anchor)
  g_updates, g_state = opt.update(g_grads, opt_state["G"], params["G"],
                                  losses=dict(terms, d_loss=d_loss))
  new_g = optax.apply_updates(params["G"], _scaled(g_updates, update_scale, "G"))

  metrics = dict(terms, d_loss=d_loss)
  return {"G": new_g, "D": new_d}, {"G": g_state, "D": d_state}, metrics
