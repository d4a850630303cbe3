"""The pix2pix U-Net generator (Isola et al. 2017), after ``UnetGenerator`` of
pytorch-CycleGAN-and-pix2pix, generalised to any depth >= 2.

Levels are numbered from the outside in, i = 0 (outermost) ... n - 1 (innermost), with
width ch(i) = ngf * min(2**i, 8). Level i's encoder is a 4x4 stride-2 conv to ch(i);
its decoder is a 4x4 stride-2 transposed conv from the concatenation [skip, inner output]
(or from the innermost code) to ch(i - 1) (3 output channels at level 0):

  encoder(i): [LeakyReLU(0.2) if i > 0] -> Conv(ch(i)) -> [Norm if 0 < i < n - 1]
  decoder(i): ReLU -> ConvT(ch(i - 1) or 3) -> Norm if i > 0 else tanh
              -> Dropout if 4 <= i <= n - 2 (the non-innermost blocks of width 8 * ngf)

so for n >= 5 the layer widths, the norm placement and the dropout blocks are exactly the
original's (n = 8 is ``unet_256``, n = 7 ``unet_128``; n <= 5 has no dropout block, as in the
original). The innermost encoder has no norm (its output is 1x1 when the depth is derived,
where instance norm would give zeros).
"""
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from bil_jax.models import batch_split
from bil_jax.models import convs
from bil_jax.models import layers


def depth(image_hw: Sequence[int], num_downs: int = -1) -> int:
  """Number of down-samplings: ``num_downs``, or log2(min(H, W)) if it is -1.

  64x64 -> 6 (down to 1x1), 128x256 -> 7 (down to 1x2), 32x32 -> 5. Raises a one-line
  ValueError naming the image size and ``model.num_downs`` if H or W is not divisible by
  2**depth (or, when derived, min(H, W) is not a power of two >= 4).
  """
  return layers.derive_depth(image_hw, num_downs, bottom=1, what="pix2pix generator", min_depth=2)


def level_width(ngf: int, i: int) -> int:
  """ch(i) = ngf * min(2**i, 8)."""
  return ngf * min(2 ** i, 8)


def has_dropout(i: int, depth: int) -> bool:
  """Whether decoder level i has dropout: non-innermost blocks whose input width is 8 ngf."""
  return 4 <= i <= depth - 2


class UnetGenerator(layers.UNetGenerator):
  """pix2pix U-Net. x [B, H, W, Cin] -> image [B, H, W, 3] in (-1, 1).

  Attributes (and depth, ngf, norm, out_channels, in_channels: see ``layers.UNetGenerator``):
    dropout: dropout rate of the inner decoder blocks (0 disables it).
  """
  dropout: float = 0.5

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = True) -> jnp.ndarray:
    """x: [B, H, W, Cin] float32. train=True enables dropout (needs a 'dropout' rng)."""
    n = self.check_input(x, 2, "pix2pix generator")
    skips = []
    h = x
    for i in range(n):
      with_norm = 0 < i < n - 1
      if i > 0:
        h = layers.leaky_relu(h)
      h = convs.conv(level_width(self.ngf, i), kernel=4, stride=2, padding=1,
                     use_bias=not with_norm, name=f"down_{i}", dtype=self.dtype)(h)
      if with_norm:
        h = layers.Norm(self.norm, name=f"down_norm_{i}")(h)
      skips.append(h)
    # h is the innermost code; decode from the inside out.
    for i in reversed(range(n)):
      if i < n - 1:
        h = jnp.concatenate([skips[i], h], axis=-1)
      h = nn.relu(h)
      if i == 0:
        h = convs.up_conv(self.out_channels, use_bias=True, name="up_0", dtype=self.dtype)(h)
        return jnp.tanh(h)
      h = convs.up_conv(level_width(self.ngf, i - 1), use_bias=False, name=f"up_{i}",
                        dtype=self.dtype)(h)
      h = layers.Norm(self.norm, name=f"up_norm_{i}")(h)
      if self.dropout > 0 and has_dropout(i, n):
        h = batch_split.Dropout(self.dropout, deterministic=not train)(h)
    raise AssertionError("unreachable")


# ---- what the builder needs (the table ``bil_jax.models.GENERATORS``) -------------------
USES_REFERENCE = False  # G(x_S): no reference image


def in_channels(num_classes: int) -> int:
  """Generator input channels: the one-hot structure map [C]."""
  return num_classes


def build(model_cfg, num_classes: int, image_hw: Sequence[int]) -> nn.Module:
  """The U-Net of ``model_cfg`` (ngf, norm, dropout, num_downs) for C classes and (H, W)."""
  return UnetGenerator(depth=depth(image_hw, model_cfg.num_downs), ngf=model_cfg.ngf,
                       norm=model_cfg.norm, dropout=float(model_cfg.dropout),
                       in_channels=in_channels(num_classes), dtype=layers.model_dtype(model_cfg))
