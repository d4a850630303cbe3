"""Convolutions of the models: ``conv2d`` and the 4x4 stride-2 transposed convolution, and
the Flax modules ``Conv``/``UpConv`` that hold their weights (``nn.Conv`` names and init).

Tensors are NHWC, kernels HWIO. ``dtype`` arguments follow the precision policy of
:mod:`bil_jax.models.layers`: the products run in that dtype (None: the input's) and
accumulate and return in the input's dtype.
"""
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

# pix2pix (Isola et al.) initialises conv weights from N(0, 0.02); we do the same.
conv_init = nn.initializers.normal(stddev=0.02)


def _cast_operands(x: jnp.ndarray, kernel: jnp.ndarray, dtype):
  """(x, kernel, accumulation dtype): both operands in ``dtype`` (None: x's dtype), and the
  result dtype x had, so a bfloat16 product accumulates and returns in float32."""
  out = x.dtype
  dtype = out if dtype is None else dtype
  return x.astype(dtype), kernel.astype(dtype), out


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
  xp = jnp.pad(x, ((0, 0), (padding, max(hp - h - padding, 0)), (padding, max(wp - w - padding, 0)),
                   (0, 0)))[:, :hp, :wp]
  xs = xp.reshape(b, hp // 2, 2, wp // 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
  xs = xs.reshape(b, hp // 2, wp // 2, 4 * c)  # channels (ry, rx, c)
  ks = kernel.reshape(kh // 2, 2, kw // 2, 2, c, o).transpose(0, 2, 1, 3, 4, 5)
  patches = _shifted_patches(xs, kh // 2, kw // 2, ho, wo)  # (ty, tx, ry, rx, c)
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


def conv(features: int, kernel: int = 4, stride: int = 1, padding: int = 1, use_bias: bool = True,
         name: str | None = None, dtype: Any = None) -> Conv:
  """A k x k convolution padded like PyTorch's ``Conv2d(padding=padding)``.

  out = floor((in + 2 * padding - kernel) / stride) + 1, e.g. 4x4 stride 2 padding 1 halves
  an even size. Same variables as ``nn.Conv`` (see :class:`Conv`).
  """
  return Conv(features, kernel, stride, padding, use_bias, dtype, name=name)


def transposed_conv_4x4_s2(x: jnp.ndarray, kernel: jnp.ndarray, impl: str | None = None,
                           dtype=None) -> jnp.ndarray:
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
        phases.append(
            jnp.einsum("bhwk,ko->bhwo", patches, kernel[ay::2, ax::2].reshape(4 * c, -1),
                       preferred_element_type=out))
  else:
    for ay in (0, 1):
      for ax in (0, 1):
        phases.append(
            jax.lax.conv_general_dilated(x, kernel[ay::2,
                                                   ax::2], (1, 1), ((1 - ay, ay), (1 - ax, ax)),
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                         preferred_element_type=out))
  y = jnp.stack(phases, axis=3).reshape(b, h, w, 2, 2, -1)  # [B,H,W,ay,ax,O]
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
