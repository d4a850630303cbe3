"""Building blocks shared by the generators and the discriminator.

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
import os
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from bil_jax.models.batch_split import current_batch_axis

NORM_KINDS = ("instance", "batch")
DTYPES = ("float32", "bfloat16")
EPS = 1e-5

# pix2pix (Isola et al.) initialises conv weights from N(0, 0.02); we do the same.
conv_init = nn.initializers.normal(stddev=0.02)


def check_norm_kind(kind: str) -> str:
  """Returns ``kind`` if it names a supported normalisation, else raises ValueError."""
  if kind not in NORM_KINDS:
    raise ValueError(
        f"model.norm={kind!r} is not supported; use one of {list(NORM_KINDS)}.")
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


def _cast_operands(x: jnp.ndarray, kernel: jnp.ndarray, dtype):
  """(x, kernel, accumulation dtype): both operands in ``dtype`` (None: x's dtype), and the
  result dtype x had, so a bfloat16 product accumulates and returns in float32."""
  out = x.dtype
  dtype = out if dtype is None else dtype
  return x.astype(dtype), kernel.astype(dtype), out


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


# How convolutions are computed. "matmul" builds the patches of each output position from
# shifted slices (after a space-to-depth for stride 2) and multiplies them with the kernel
# in one dot_general; "xla" calls lax.conv_general_dilated. Both give the same result up
# to float summation order (tests/test_conv_impl.py). "matmul" exists for speed on CPU:
# the meta-gradient vmaps the inner loop over tasks, each with its own weights, and
# XLA:CPU runs such per-task (feature-grouped) convolutions and the kernel gradients of
# strided convolutions far below its conv peak, while batched matmuls run much closer to
# the matmul peak (docs/benchmark.md has the measured speed-ups). "xla" is right on
# GPUs/TPUs (cuDNN and friends) and compiles faster. The default, "auto", picks "matmul"
# on the CPU backend and "xla" elsewhere; BIL_JAX_CONV_IMPL=xla|matmul overrides it.
CONV_IMPLS = ("auto", "xla", "matmul")


def conv_impl(impl: str | None = None) -> str:
  """The convolution implementation to use: ``impl``, else $BIL_JAX_CONV_IMPL, else auto.

  "auto" resolves to "matmul" on the CPU backend and "xla" on every other backend.
  Raises a one-line ValueError naming BIL_JAX_CONV_IMPL if it holds an unknown value.
  """
  impl = impl or os.environ.get("BIL_JAX_CONV_IMPL") or "auto"
  if impl not in CONV_IMPLS:
    raise ValueError(f"BIL_JAX_CONV_IMPL={impl!r} is not one of {list(CONV_IMPLS)}")
  if impl == "auto":
    return "matmul" if jax.default_backend() == "cpu" else "xla"
  return impl


def _shifted_patches(x: jnp.ndarray, kh: int, kw: int, ho: int, wo: int) -> jnp.ndarray:
  """[B,H,W,C] -> [B,ho,wo,kh*kw*C]: the stride-1 VALID patches, tap-major (i, j, c)."""
  return jnp.concatenate([x[:, i:i + ho, j:j + wo, :] for i in range(kh) for j in range(kw)],
                         axis=-1)


def conv2d(x: jnp.ndarray, kernel: jnp.ndarray, stride: int = 1, padding: int = 1,
           impl: str | None = None, dtype=None) -> jnp.ndarray:
  """Cross-correlation of x [B,H,W,C] with kernel [kh,kw,C,O] (HWIO), symmetric zero padding.

  Same result as ``lax.conv_general_dilated(x, kernel, (s, s), ((p, p), (p, p)))`` in NHWC.
  With ``impl="matmul"`` (see :func:`conv_impl`) stride 2 is first turned into
  stride 1 by a space-to-depth of the padded input (a 4x4/2 conv becomes a 2x2/1 conv on
  4C channels), then the patches are multiplied with the kernel: every op, and every op of
  both gradients, is a slice, pad, transpose or batched matmul.
  ``dtype`` (e.g. ``jnp.bfloat16``) is the dtype the product is computed in; the result
  is accumulated and returned in x's dtype. None: x's dtype throughout.
  """
  impl = conv_impl(impl)
  x, kernel, out = _cast_operands(x, kernel, dtype)
  kh, kw, c, o = kernel.shape
  if impl == "xla" or stride not in (1, 2) or (stride == 2 and (kh % 2 or kw % 2)):
    return jax.lax.conv_general_dilated(x, kernel, (stride, stride),
                                        ((padding, padding), (padding, padding)),
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                        preferred_element_type=out)
  b, h, w, _ = x.shape
  ho = (h + 2 * padding - kh) // stride + 1
  wo = (w + 2 * padding - kw) // stride + 1
  if stride == 1:
    xp = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    patches = _shifted_patches(xp, kh, kw, ho, wo)
    return jnp.einsum("bhwk,ko->bhwo", patches, kernel.reshape(kh * kw * c, o),
                      preferred_element_type=out)
  # stride 2: pad to an even size, space-to-depth (phase ry, rx), then a stride-1 conv with
  # taps ty = (i - ry) / 2 of kernel row i = 2 ty + ry.
  hp, wp = 2 * (ho + kh // 2 - 1), 2 * (wo + kw // 2 - 1)
  xp = jnp.pad(x, ((0, 0), (padding, max(hp - h - padding, 0)),
                   (padding, max(wp - w - padding, 0)), (0, 0)))[:, :hp, :wp]
  xs = xp.reshape(b, hp // 2, 2, wp // 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
  xs = xs.reshape(b, hp // 2, wp // 2, 4 * c)                     # channels (ry, rx, c)
  ks = kernel.reshape(kh // 2, 2, kw // 2, 2, c, o).transpose(0, 2, 1, 3, 4, 5)
  patches = _shifted_patches(xs, kh // 2, kw // 2, ho, wo)        # (ty, tx, ry, rx, c)
  return jnp.einsum("bhwk,ko->bhwo", patches, ks.reshape(kh * kw * c, o),
                    preferred_element_type=out)


class Conv(nn.Module):
  """``nn.Conv`` (NHWC, HWIO 'kernel', optional 'bias', same names, shapes and init) for
  square kernels with symmetric padding, computed by :func:`conv2d` in ``dtype`` (None:
  the input's dtype; see the module's precision policy)."""
  features: int
  kernel: int = 4
  stride: int = 1
  padding: int = 1
  use_bias: bool = True
  dtype: Any = None

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    k = self.param("kernel", conv_init, (self.kernel, self.kernel, x.shape[-1], self.features),
                   jnp.float32)
    y = conv2d(x, k.astype(x.dtype), self.stride, self.padding, dtype=self.dtype)
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
    return y


def conv(features: int, kernel: int = 4, stride: int = 1, padding: int = 1,
         use_bias: bool = True, name: str | None = None, dtype: Any = None) -> Conv:
  """A k x k convolution padded like PyTorch's ``Conv2d(padding=padding)``.

  out = floor((in + 2 * padding - kernel) / stride) + 1, e.g. 4x4 stride 2 padding 1 halves
  an even size. Same variables as ``nn.Conv`` (see :class:`Conv`).
  """
  return Conv(features, kernel, stride, padding, use_bias, dtype, name=name)


def transposed_conv_4x4_s2(x: jnp.ndarray, kernel: jnp.ndarray,
                           impl: str | None = None, dtype=None) -> jnp.ndarray:
  """``nn.ConvTranspose(O, (4, 4), strides=2, padding=2)`` computed as 4 phase convolutions.

  Along one axis the transposed convolution gives out[2m] = x[m-1] K[0] + x[m] K[2] and
  out[2m+1] = x[m] K[1] + x[m+1] K[3]: output phase a is an ordinary 2-tap convolution
  with taps K[a::2] and padding (1-a, a). In 2-D, phase (ay, ax) is a 2x2 convolution with
  K[ay::2, ax::2]; the four phases are interleaved into the output. The result is
  identical to the stride-dilated form, but every convolution (and both of its
  gradients) is a plain stride-1 one, which XLA:CPU runs far faster than the kernel
  gradient of an input-dilated convolution (docs/usage.md).

  Args:
    x: [B,H,W,C].
    kernel: [4,4,C,O] in ``nn.ConvTranspose`` layout (transpose_kernel=False).
    impl: "xla" or "matmul"; default :func:`conv_impl`.
    dtype: compute dtype of the products (None: x's), accumulated in x's dtype.

  Returns:
    [B,2H,2W,O].
  """
  x, kernel, out = _cast_operands(x, kernel, dtype)
  b, h, w, c = x.shape
  phases = []
  if conv_impl(impl) == "matmul":
    # Phase (ay, ax), tap (ty, tx) reads the input padded by 1 at offset (ay + ty, ax + tx).
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    for ay in (0, 1):
      for ax in (0, 1):
        patches = _shifted_patches(xp[:, ay:ay + h + 1, ax:ax + w + 1], 2, 2, h, w)
        phases.append(jnp.einsum("bhwk,ko->bhwo", patches,
                                 kernel[ay::2, ax::2].reshape(4 * c, -1),
                                 preferred_element_type=out))
  else:
    for ay in (0, 1):
      for ax in (0, 1):
        phases.append(jax.lax.conv_general_dilated(
            x, kernel[ay::2, ax::2], (1, 1), ((1 - ay, ay), (1 - ax, ax)),
            dimension_numbers=("NHWC", "HWIO", "NHWC"), preferred_element_type=out))
  y = jnp.stack(phases, axis=3).reshape(b, h, w, 2, 2, -1)   # [B,H,W,ay,ax,O]
  return y.transpose(0, 1, 3, 2, 4, 5).reshape(b, 2 * h, 2 * w, -1)


class UpConv(nn.Module):
  """4x4 stride-2 transposed convolution that exactly doubles H and W.

  Same parameters ('kernel' [4,4,C,O], optional 'bias' [O]) and outputs as
  ``nn.ConvTranspose(O, (4, 4), strides=(2, 2), padding=((2, 2), (2, 2)))``, which matches
  the geometry of PyTorch's ``ConvTranspose2d(kernel_size=4, stride=2, padding=1)``
  (with the kernel flipped); computed by :func:`transposed_conv_4x4_s2` in ``dtype``.
  """
  features: int
  use_bias: bool = True
  dtype: Any = None

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    kernel = self.param("kernel", conv_init, (4, 4, x.shape[-1], self.features), jnp.float32)
    y = transposed_conv_4x4_s2(x, kernel.astype(x.dtype), dtype=self.dtype)
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
    return y


def up_conv(features: int, use_bias: bool = True, name: str | None = None,
            dtype: Any = None) -> UpConv:
  """4x4 stride-2 transposed convolution that exactly doubles H and W (see :class:`UpConv`)."""
  return UpConv(features, use_bias=use_bias, dtype=dtype, name=name)


def leaky_relu(x: jnp.ndarray) -> jnp.ndarray:
  """LeakyReLU with slope 0.2, as in pix2pix."""
  return nn.leaky_relu(x, negative_slope=0.2)


def check_divisible(image_hw: Sequence[int], depth: int, what: str,
                    derived: bool = False) -> None:
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
    raise ValueError(
        f"{what}: image size {h}x{w} is not divisible by 2**{depth} = {2 ** depth} "
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
      raise ValueError(
          f"{what}: model.num_downs={depth} for image size {h}x{w}; it must be -1 "
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
