"""Flax Linen networks: pix2pix U-Net and PG² residual U-Net generators, the PatchGAN
discriminator and the frozen VGG16 feature extractor.

Every model has a single ``'params'`` collection (no ``batch_stats``, nothing mutable):

  G = build_generator(cfg.model, num_classes, (H, W))
  g_params = G.init({'params': k, 'dropout': k2}, x, train=True)['params']
  y = G.apply({'params': g_params}, x, train=True, rngs={'dropout': key})  # [B, H, W, 3]
  D = build_discriminator(cfg.model, num_classes)
  d_params = D.init(k, structure, image)['params']
  logits = D.apply({'params': d_params}, structure, image)                 # [B, h, w, 1]

Generator input x is the one-hot structure map [B, H, W, C] for pix2pix, and
concat(reference image [3], one-hot map [C]) [B, H, W, 3 + C] for PG².
"""
from typing import Any, Sequence

import flax.linen as nn

from bil_jax.models import layers
from bil_jax.models import pg2
from bil_jax.models import pix2pix
from bil_jax.models.patchgan import PatchGAN
from bil_jax.models.pg2 import PG2Generator
from bil_jax.models.pix2pix import UnetGenerator

# model.name -> generator module. A module declares USES_REFERENCE, in_channels(C),
# depth(image_hw, num_downs) and build(model_cfg, C, image_hw); a new generator is one
# more entry.
GENERATORS = {"pix2pix": pix2pix, "pg2": pg2}


def generator_module(model_cfg: Any):
  """The module of ``model_cfg.name`` in :data:`GENERATORS`; one-line error if unknown."""
  if model_cfg.name not in GENERATORS:
    raise ValueError(f"model.name={model_cfg.name!r} is not supported; use one of "
                     f"{list(GENERATORS)}.")
  return GENERATORS[model_cfg.name]


def uses_reference(model_cfg: Any) -> bool:
  """Whether the generator takes a reference image (PG²) besides the structure map."""
  return generator_module(model_cfg).USES_REFERENCE


def generator_in_channels(model_cfg: Any, num_classes: int) -> int:
  """Channels of the generator input: C for pix2pix, 3 + C for PG² (reference image first)."""
  return generator_module(model_cfg).in_channels(num_classes)


def generator_depth(model_cfg: Any, image_hw: Sequence[int]) -> int:
  """Number of stride-2 down-samplings of the generator for images of size (H, W)."""
  return generator_module(model_cfg).depth(image_hw, model_cfg.num_downs)


def build_generator(model_cfg: Any, num_classes: int, image_hw: Sequence[int]) -> nn.Module:
  """The generator named by ``model_cfg.name``; x [B, H, W, Cin] -> [B, H, W, 3] in (-1, 1).

  Raises a one-line ValueError naming the image size and ``model.num_downs`` if (H, W)
  cannot be divided by the U-Net depth.
  """
  layers.check_norm_kind(model_cfg.norm)
  return generator_module(model_cfg).build(model_cfg, num_classes, image_hw)


def build_discriminator(model_cfg: Any, num_classes: int) -> nn.Module:
  """PatchGAN D(structure [B, H, W, C], image [B, H, W, 3]) -> logits [B, h, w, 1]."""
  layers.check_norm_kind(model_cfg.norm)
  return PatchGAN(num_classes=num_classes, ndf=model_cfg.ndf, n_layers=model_cfg.d_layers,
                  norm=model_cfg.norm, dtype=layers.model_dtype(model_cfg))
