"""Building blocks shared by the generators and the discriminator, besides the
convolutions (:mod:`bil_jax.models.convs`).

All layers are stateless: normalisation uses the statistics of the current input (instance
norm per sample, or batch norm over the current batch) and keeps no running averages, so a
model's variables are a single ``'params'`` collection and ``apply`` is a pure function of
them. Tensors are NHWC float32.

Precision policy (``model.dtype``, see :func:`compute_dtype`): parameters, activations,
normalisation, losses and metrics are float32; with ``"bfloat16"`` every convolution
multiplies bfloat16 copies of its input and kernel and accumulates in float32 (the mixed
precision of GPU tensor cores and TPU MXUs), so only the convolutions' matmuls change.

The pairs of one task may be split over the 'batch' axis of the mesh (bil_jax.parallel).
While a model is applied inside ``bil_jax.models.batch_split.batch_axis`` (``bil_jax.gan``
does it from ``GanSpec.batch_axis``), batch norm averages its moments over that axis and
``batch_split.Dropout`` draws the mask of the whole task batch
and keeps this device's rows, so both compute what one device computes on the whole
batch. Outside it (None, the default) nothing changes.
"""
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from bil_jax.models.batch_split import current_batch_axis

NORM_KINDS = ("instance", "batch")
DTYPES = ("float32", "bfloat16")
EPS = 1e-5


def check_norm_kind(kind: str) -> str:
  """Returns ``kind`` if it names a supported normalisation, else raises ValueError."""
  if kind not in NORM_KINDS:
    raise ValueError(f"model.norm={kind!r} is not supported; use one of {list(NORM_KINDS)}.")
  return kind


def compute_dtype(name: str):
  """The convolution compute dtype for ``model.dtype`` = name: None for "float32" (compute
  in the input's dtype, so float64 checks stay float64), ``jnp.bfloat16`` for "bfloat16".
  Raises a one-line ValueError naming ``model.dtype`` for anything else."""
  if name not in DTYPES:
    raise ValueError(f"model.dtype={name!r} is not supported; use one of {list(DTYPES)}.")
  return None if name == "float32" else jnp.bfloat16


def model_dtype(model_cfg) -> "jnp.dtype | None":
  """:func:`compute_dtype` of a model config's ``dtype`` entry ("float32" where absent)."""
  return compute_dtype(model_cfg.get("dtype", "float32"))


def normalize(x: jnp.ndarray, axes: Sequence[int], eps: float = EPS,
              axis_name: Optional[str] = None) -> jnp.ndarray:
  """(x - mean) / sqrt(var + eps) with biased statistics over ``axes`` (kept dims).

  ``axis_name``: the rows of the batch (axis 0, which must be in ``axes``) are split over
  this mesh axis in equal blocks; the moments are averaged over it (``lax.pmean``), so
  they are those of the whole batch.
  """
  mean = jnp.mean(x, axis=axes, keepdims=True)
  if axis_name is not None:
    mean = jax.lax.pmean(mean, axis_name)
  var = jnp.mean(jnp.square(x - mean), axis=axes, keepdims=True)
  if axis_name is not None:
    var = jax.lax.pmean(var, axis_name)
  return (x - mean) * (1.0 / jnp.sqrt(var + eps))


class Norm(nn.Module):
  """Instance or current-batch normalisation with a learnable per-channel scale and bias.

  Attributes:
    kind: "instance": statistics per sample and channel over H, W (zeros at 1x1 spatial);
      "batch": statistics per channel over N, H, W of the current batch (no running stats);
      of the whole batch where its rows are split over a mesh axis (``batch_split.batch_axis``).
    eps: added to the variance.
  """
  kind: str = "instance"
  eps: float = EPS

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    """x: [B, H, W, C] -> [B, H, W, C]."""
    instance = check_norm_kind(self.kind) == "instance"
    axes = (1, 2) if instance else (0, 1, 2)
    c = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
    axis_name = None if instance else current_batch_axis()
    return normalize(x, axes, self.eps, axis_name) * scale + bias


def leaky_relu(x: jnp.ndarray) -> jnp.ndarray:
  """LeakyReLU with slope 0.2, as in pix2pix."""
  return nn.leaky_relu(x, negative_slope=0.2)


def check_divisible(image_hw: Sequence[int], depth: int, what: str, derived: bool = False) -> None:
  """Raises a one-line ValueError unless H and W are divisible by 2**depth.

  Args:
    image_hw: (H, W).
    depth: number of stride-2 down-samplings.
    what: the model, for the message.
    derived: whether ``depth`` was derived from the image size (for the message).
  """
  h, w = image_hw
  if h % (2 ** depth) or w % (2 ** depth):
    source = "derived from min(H, W)" if derived else f"model.num_downs={depth}"
    raise ValueError(f"{what}: image size {h}x{w} is not divisible by 2**{depth} = {2 ** depth} "
                     f"({source}); set model.num_downs so that H and W are multiples of "
                     f"2**model.num_downs.")


def derive_depth(image_hw: Sequence[int], num_downs: int, bottom: int, what: str,
                 min_depth: int = 1) -> int:
  """The number of stride-2 down-samplings of a U-Net.

  Args:
    image_hw: (H, W).
    num_downs: ``model.num_downs``; -1 derives it as log2(min(H, W) / bottom), which needs
      min(H, W) to be ``bottom`` times a power of two.
    bottom: size of the shorter side at the bottom of the U-Net when derived.
    what: the model, for the messages.
    min_depth: smallest depth the model supports.

  Returns:
    The depth; H and W are checked to be divisible by 2**depth.
  """
  h, w = (int(s) for s in image_hw)
  if num_downs == -1:
    short = min(h, w)
    ratio = short // bottom
    if short % bottom or ratio < 2 ** min_depth or ratio & (ratio - 1):
      need = "a power of two" if bottom == 1 else f"{bottom} times a power of two"
      raise ValueError(
          f"{what}: cannot derive the depth for image size {h}x{w} (model.num_downs=-1): "
          f"min(H, W) = {short} must be {need}, at least {bottom * 2 ** min_depth}; set "
          f"model.num_downs explicitly (H and W divisible by 2**model.num_downs).")
    depth = ratio.bit_length() - 1
  else:
    depth = int(num_downs)
    if depth < min_depth:
      raise ValueError(f"{what}: model.num_downs={depth} for image size {h}x{w}; it must be -1 "
                       f"(derived) or >= {min_depth}.")
  check_divisible((h, w), depth, what, derived=num_downs == -1)
  return depth


def check_channels(x: jnp.ndarray, expected: int | None, what: str) -> None:
  """Raises a one-line ValueError if ``expected`` is set and x [..., C] has C != expected."""
  if expected is not None and x.shape[-1] != expected:
    raise ValueError(f"{what}: input has {x.shape[-1]} channels, expected {expected}.")


class UNetGenerator(nn.Module):
  """Fields and input checks shared by the U-Net generators (pix2pix, PG²).

  Subclasses define ``__call__(x [B, H, W, Cin], train) -> image [B, H, W, out_channels]``.

  Attributes:
    depth: number of stride-2 down-samplings n (H and W must be divisible by 2**n).
    ngf: width of the outermost (full-resolution) level.
    norm: "instance" | "batch" (see ``Norm``).
    out_channels: channels of the output image.
    in_channels: if set, the input's channel count is checked against it.
    dtype: the convolutions' compute dtype (None: float32 / the input's; see
      :func:`compute_dtype`).
  """
  depth: int
  ngf: int = 64
  norm: str = "instance"
  out_channels: int = 3
  in_channels: int | None = None
  dtype: Any = None

  def check_input(self, x: jnp.ndarray, min_depth: int, what: str) -> int:
    """Raises a one-line ValueError for a depth below ``min_depth``, an input x [B, H, W, C]
    with C != in_channels or H, W not divisible by 2**depth, or an unknown norm; returns n."""
    n = self.depth
    if n < min_depth:
      raise ValueError(f"depth={n} must be >= {min_depth}.")
    check_channels(x, self.in_channels, what)
    check_divisible(x.shape[1:3], n, what)
    check_norm_kind(self.norm)
    return n
