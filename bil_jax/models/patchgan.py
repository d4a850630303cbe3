"""The PatchGAN discriminator of pix2pix (``NLayerDiscriminator``), conditioned on the
structure map by channel concatenation: D(concat(structure, image)) -> patch logits.

  Conv4x4/2(ndf) -> LeakyReLU(0.2)
  for i in 1 .. n_layers - 1: Conv4x4/2(ndf * min(2**i, 8)) -> Norm -> LeakyReLU(0.2)
  Conv4x4/1(ndf * min(2**n_layers, 8)) -> Norm -> LeakyReLU(0.2)
  Conv4x4/1(1)

Every conv has padding 1 (as in PyTorch), so n_layers = 3 has a 70x70 receptive field and a
32x32 input gives 2x2 logits, 128x256 gives 14x30.
"""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from bil_jax.models import convs
from bil_jax.models import layers


def patchgan_output_size(size: int, n_layers: int) -> int:
  """Spatial size of the logits along one axis for an input of ``size`` pixels."""
  for _ in range(n_layers):
    size = (size + 2 - 4) // 2 + 1
  for _ in range(2):
    size = size + 2 - 4 + 1
  return size


class PatchGAN(nn.Module):
  """(structure [B, H, W, C], image [B, H, W, 3]) -> logits [B, h, w, 1].

  Attributes:
    num_classes: C, channels of the one-hot structure map (checked).
    ndf: width of the first layer.
    n_layers: number of stride-2 convs (``model.d_layers``).
    norm: "instance" | "batch" (see ``layers.Norm``).
  """
  num_classes: int
  ndf: int = 64
  n_layers: int = 3
  norm: str = "instance"
  dtype: Any = None  # the convolutions' compute dtype (layers.compute_dtype)

  @nn.compact
  def __call__(self, structure: jnp.ndarray, image: jnp.ndarray) -> jnp.ndarray:
    if structure.shape[-1] != self.num_classes:
      raise ValueError(f"PatchGAN: structure has {structure.shape[-1]} channels, expected "
                       f"num_classes={self.num_classes}.")
    if structure.shape[:3] != image.shape[:3]:
      raise ValueError(
          f"PatchGAN: structure {structure.shape} and image {image.shape} differ in B, H, W.")
    layers.check_norm_kind(self.norm)
    if patchgan_output_size(min(image.shape[1:3]), self.n_layers) < 1:
      raise ValueError(f"PatchGAN: image size {image.shape[1]}x{image.shape[2]} is too small for "
                       f"model.d_layers={self.n_layers}.")
    h = jnp.concatenate([structure, image], axis=-1)
    h = convs.conv(self.ndf, kernel=4, stride=2, padding=1, name="conv_0", dtype=self.dtype)(h)
    h = layers.leaky_relu(h)
    for i in range(1, self.n_layers + 1):
      stride = 2 if i < self.n_layers else 1
      h = convs.conv(self.ndf * min(2 ** i, 8), kernel=4, stride=stride, padding=1, use_bias=False,
                     name=f"conv_{i}", dtype=self.dtype)(h)
      h = layers.leaky_relu(layers.Norm(self.norm, name=f"norm_{i}")(h))
    return convs.conv(1, kernel=4, stride=1, padding=1, name="logits", dtype=self.dtype)(h)
