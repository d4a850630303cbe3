"""The PG² generator G1 (Ma et al. 2017, "Pose guided person image generation"): a residual
U-Net over concat(reference image, one-hot structure map).

Differences from the original G1, which has a fully connected bottleneck tied to the image
size and no normalisation: the bottleneck here is a residual block (so the network is fully
convolutional and small at 128x256), and every conv that feeds a non-linearity or a residual
sum is followed by ``model.norm`` (instance or current-batch), like the other models here.

Depth rule: n = ``model.num_downs`` stride-2 down-samplings, or, if it is -1,
n = log2(min(H, W) / 4), i.e. down to 4 pixels on the short side (32x32 -> 3 to 4x4,
64x64 -> 4 to 4x4, 128x256 -> 5 to 4x8). H and W must be divisible by 2**n and the bottom
must be at least 2x2 (instance norm is degenerate at 1x1); otherwise a one-line ValueError
names the image size and ``model.num_downs``.

Widths grow linearly as in the original: level i (resolution H / 2**i) has
ch(i) = ngf * (i + 1) channels, i = 0 ... n.

  stem:       Conv3x3(ch(0))
  encoder i:  ResBlock(ch(i)) -> skip_i -> Conv4x4/2(ch(i + 1)) -> Norm -> ReLU  (i < n)
  bottleneck: ResBlock(ch(n))
  decoder i:  ConvT4x4/2(ch(i)) -> Norm -> ReLU -> concat(skip_i) -> Conv3x3(ch(i)) -> Norm
              -> ReLU -> ResBlock(ch(i))                                           (i < n)
  head:       Conv3x3(3) -> tanh
  ResBlock(c)(h) = h + Norm(Conv3x3(ReLU(Norm(Conv3x3(h)))))
"""
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from bil_jax.models import convs
from bil_jax.models import layers


def depth(image_hw: Sequence[int], num_downs: int = -1) -> int:
  """Number of down-sampling modules n (see the module docstring for the rule)."""
  n = layers.derive_depth(image_hw, num_downs, bottom=4, what="PG2 generator", min_depth=1)
  h, w = image_hw
  if min(h, w) // 2 ** n < 2:
    raise ValueError(f"PG2 generator: image size {h}x{w} with model.num_downs={n} leaves a bottom "
                     f"smaller than 2x2; use a smaller model.num_downs (or -1: down to 4 pixels).")
  return n


def level_width(ngf: int, i: int) -> int:
  """ch(i) = ngf * (i + 1)."""
  return ngf * (i + 1)


class ResBlock(nn.Module):
  """h + Norm(Conv3x3(ReLU(Norm(Conv3x3(h))))); [B, H, W, C] -> [B, H, W, C]."""
  norm: str = "instance"
  dtype: Any = None  # the convolutions' compute dtype (layers.compute_dtype)

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    c = x.shape[-1]
    h = convs.conv(c, kernel=3, padding=1, use_bias=False, name="conv_0", dtype=self.dtype)(x)
    h = nn.relu(layers.Norm(self.norm, name="norm_0")(h))
    h = convs.conv(c, kernel=3, padding=1, use_bias=False, name="conv_1", dtype=self.dtype)(h)
    h = layers.Norm(self.norm, name="norm_1")(h)
    return x + h


class PG2Generator(layers.UNetGenerator):
  """PG² G1 residual U-Net. x [B, H, W, 3 + C] -> image [B, H, W, 3] in (-1, 1).

  Attributes (see ``layers.UNetGenerator``): depth (number of down-sampling modules n),
  ngf (width of the full-resolution level), norm, out_channels, in_channels.
  """

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = True) -> jnp.ndarray:
    """x: [B, H, W, 3 + C] float32. ``train`` is accepted for API symmetry (no dropout)."""
    del train
    n = self.check_input(x, 1, "PG2 generator")
    h = convs.conv(level_width(self.ngf, 0), kernel=3, padding=1, name="stem", dtype=self.dtype)(x)
    skips = []
    for i in range(n):
      h = ResBlock(self.norm, self.dtype, name=f"enc_res_{i}")(h)
      skips.append(h)
      h = convs.conv(level_width(self.ngf, i + 1), kernel=4, stride=2, padding=1, use_bias=False,
                     name=f"down_{i}", dtype=self.dtype)(h)
      h = nn.relu(layers.Norm(self.norm, name=f"down_norm_{i}")(h))
    h = ResBlock(self.norm, self.dtype, name="bottleneck")(h)
    for i in reversed(range(n)):
      c = level_width(self.ngf, i)
      h = convs.up_conv(c, use_bias=False, name=f"up_{i}", dtype=self.dtype)(h)
      h = nn.relu(layers.Norm(self.norm, name=f"up_norm_{i}")(h))
      h = jnp.concatenate([h, skips[i]], axis=-1)
      h = convs.conv(c, kernel=3, padding=1, use_bias=False, name=f"merge_{i}", dtype=self.dtype)(h)
      h = nn.relu(layers.Norm(self.norm, name=f"merge_norm_{i}")(h))
      h = ResBlock(self.norm, self.dtype, name=f"dec_res_{i}")(h)
    h = convs.conv(self.out_channels, kernel=3, padding=1, name="head", dtype=self.dtype)(h)
    return jnp.tanh(h)


# ---- what the builder needs (the table ``bil_jax.models.GENERATORS``) -------------------
USES_REFERENCE = True  # G(x_R, x_S): the reference image comes first


def in_channels(num_classes: int) -> int:
  """Generator input channels: reference image [3] then one-hot structure map [C]."""
  return 3 + num_classes


def build(model_cfg, num_classes: int, image_hw: Sequence[int]) -> nn.Module:
  """The residual U-Net of ``model_cfg`` (ngf, norm, num_downs) for C classes and (H, W)."""
  return PG2Generator(depth=depth(image_hw,
                                  model_cfg.num_downs), ngf=model_cfg.ngf, norm=model_cfg.norm,
                      in_channels=in_channels(num_classes), dtype=layers.model_dtype(model_cfg))
