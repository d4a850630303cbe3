"""LPIPS (Zhang et al. 2018), AlexNet trunk, version 0.1, in Flax Linen.

A faithful port of the official PyTorch `lpips.LPIPS(net='alex', version='0.1')`
forward pass (https://github.com/richzhang/PerceptualSimilarity) with
`normalize=False`, i.e. inputs are images in [-1, 1]:

  1. ScalingLayer: x -> (x - shift) / scale with the official per-channel
     constants (see `_SHIFT`, `_SCALE`).
  2. torchvision AlexNet `features[:12]`; the outputs of the five ReLUs
     (torchvision indices 1, 4, 7, 9, 11) are the feature maps:
       conv 11x11 stride 4 pad 2 -> 64,  relu   (relu1)
       maxpool 3 stride 2,
       conv 5x5 pad 2 -> 192,            relu   (relu2)
       maxpool 3 stride 2,
       conv 3x3 pad 1 -> 384,            relu   (relu3)
       conv 3x3 pad 1 -> 256,            relu   (relu4)
       conv 3x3 pad 1 -> 256,            relu   (relu5)
     PyTorch's MaxPool2d(3, 2) has no padding and floors the output size, which
     is 'VALID' pooling here; the convolutions use the same explicit symmetric
     zero padding as PyTorch.
  3. Each feature map is divided by (its L2 norm over channels + 1e-10)
     (as a multiplication by the reciprocal, which XLA does anyway).
  4. Squared difference of the two normalised feature maps, a 1x1 linear head
     without bias per layer (the learned weights, non-negative in the official
     file), a spatial mean, and a sum over the five layers.

Parameters are produced by `data_prep/convert_lpips_weights.py` from the
torchvision AlexNet weights and the official LPIPS v0.1 linear weights, and
read with `load_lpips_params`. The parameter tree is

  {'params': {'trunk': {'conv0'..'conv4': {'kernel': [kh, kw, in, out],
                                           'bias': [out]}},
              'lin0'..'lin4': {'kernel': [1, 1, C, 1]}}}

Layouts: images NHWC, kernels HWIO (PyTorch OIHW transposed by the converter).

Numerics: both batches go through the trunk as one [2B] batch and the
normalised difference is written so that identical images give exactly 0
(see `normalized_difference`). Against a PyTorch reference of the official
forward the float32 CPU results agree to ~3e-7 absolute. `precision=None` uses
the platform default (TF32 convolutions on recent NVIDIA GPUs, fine for a
training loss); `bil_jax.metrics.lpips` evaluates with HIGHEST.
"""

import os
from typing import Any, Optional, Sequence, Tuple

import flax.linen as nn
from flax import serialization
import jax
import jax.numpy as jnp

# Official ScalingLayer constants (lpips/lpips.py, ScalingLayer).
_SHIFT = (-.030, -.088, -.188)
_SCALE = (.458, .448, .450)

# (features, kernel size, stride, padding) of the five torchvision AlexNet
# convolutions `features.{0,3,6,8,10}`.
ALEXNET_CONVS: Tuple[Tuple[int, int, int, int], ...] = (
    (64, 11, 4, 2),
    (192, 5, 1, 2),
    (384, 3, 1, 1),
    (256, 3, 1, 1),
    (256, 3, 1, 1),
)
# torchvision `features` indices of the convolutions above.
ALEXNET_TORCH_INDICES: Tuple[int, ...] = (0, 3, 6, 8, 10)
CHANNELS: Tuple[int, ...] = tuple(c[0] for c in ALEXNET_CONVS)
NORM_EPS = 1e-10

CONVERT_COMMAND = (
    'python -m data_prep.convert_lpips_weights '
    '--alexnet=alexnet-owt-7be5be79.pth --lin=alex.pth --out=PATH')


def scaling_layer(x: jax.Array) -> jax.Array:
  """Official LPIPS input scaling. x: [..., 3] in [-1, 1] -> [..., 3]."""
  shift = jnp.asarray(_SHIFT, x.dtype)
  scale = jnp.asarray(_SCALE, x.dtype)
  return (x - shift) / scale


def inverse_norm(feat: jax.Array, eps: float = NORM_EPS) -> jax.Array:
  """1 / (||feat||_2 over channels + eps). feat: [B, H, W, C] -> [B, H, W, 1].

  The square root is guarded so that gradients stay finite where a pixel's
  features are all zero (its forward value is the plain sqrt).
  """
  sq = jnp.sum(jnp.square(feat), axis=-1, keepdims=True)
  positive = sq > 0
  norm = jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)
  return 1.0 / (norm + eps)


def normalize_tensor(feat: jax.Array, eps: float = NORM_EPS) -> jax.Array:
  """Official `normalize_tensor`: feat / (||feat||_2 over channels + eps)."""
  return feat * inverse_norm(feat, eps)


def normalized_difference(f_a: jax.Array, f_b: jax.Array, r_a: jax.Array,
                          r_b: jax.Array) -> jax.Array:
  """normalize(f_a) - normalize(f_b), exactly 0 where f_a == f_b.

  Computed as (f_a - f_b) * r_a + f_b * (r_a - r_b), algebraically equal to
  f_a * r_a - f_b * r_b. The direct form is not robust under XLA: LLVM may
  contract one product into an FMA (fma(f_a, r_a, -(f_b * r_b))), leaving a
  ~1e-16 residue for identical images; here every term is an exact 0 then.

  Args:
    f_a: [B, H, W, C] features.
    f_b: [B, H, W, C] features.
    r_a: [B, H, W, 1] `inverse_norm(f_a)`.
    r_b: [B, H, W, 1] `inverse_norm(f_b)`.
  """
  return (f_a - f_b) * r_a + f_b * (r_a - r_b)


def _max_pool(x: jax.Array) -> jax.Array:
  """PyTorch MaxPool2d(kernel_size=3, stride=2): no padding, floor mode."""
  return nn.max_pool(x, window_shape=(3, 3), strides=(2, 2), padding='VALID')


class AlexNetFeatures(nn.Module):
  """torchvision AlexNet `features[:12]`, returning the five ReLU outputs.

  Attributes:
    precision: matmul/conv precision (None = platform default; pass
      `jax.lax.Precision.HIGHEST` for float32-exact results on GPU/TPU).
  """
  precision: Optional[jax.lax.Precision] = None

  @nn.compact
  def __call__(self, x: jax.Array) -> Sequence[jax.Array]:
    """x: [B, H, W, 3] (already scaled) -> 5 maps [B, h_l, w_l, C_l]."""
    feats = []
    for i, (features, k, stride, pad) in enumerate(ALEXNET_CONVS):
      if i in (1, 2):  # torchvision indices 2 and 5: maxpool before conv 1, 2.
        x = _max_pool(x)
      x = nn.Conv(features, kernel_size=(k, k), strides=(stride, stride),
                  padding=((pad, pad), (pad, pad)), precision=self.precision,
                  name=f'conv{i}')(x)
      x = nn.relu(x)
      feats.append(x)
    return feats


class LPIPS(nn.Module):
  """LPIPS distance, AlexNet trunk, v0.1, for images in [-1, 1].

  Attributes:
    precision: see `AlexNetFeatures`.
  """
  precision: Optional[jax.lax.Precision] = None

  @nn.compact
  def __call__(self, a: jax.Array, b: jax.Array,
               per_layer: bool = False) -> Any:
    """Distance between image batches.

    Args:
      a: [B, H, W, 3] images in [-1, 1].
      b: [B, H, W, 3] images in [-1, 1].
      per_layer: also return the per-layer terms.

    Returns:
      [B] distances, or ([B], list of five [B]) when per_layer.
    """
    trunk = AlexNetFeatures(precision=self.precision, name='trunk')
    # One trunk pass over [a; b]: both halves then go through the same ops.
    n = a.shape[0]
    feats = trunk(scaling_layer(jnp.concatenate([a, b], axis=0)))
    terms = []
    for i, f in enumerate(feats):
      r = inverse_norm(f)
      diff = jnp.square(normalized_difference(f[:n], f[n:], r[:n], r[n:]))
      lin = nn.Conv(1, kernel_size=(1, 1), use_bias=False,
                    precision=self.precision, name=f'lin{i}')(diff)
      terms.append(jnp.mean(lin, axis=(1, 2, 3)))
    total = sum(terms[1:], terms[0])
    if per_layer:
      return total, terms
    return total


def load_lpips_params(path: str) -> Any:
  """Reads converted LPIPS parameters (flax msgpack) written by the converter.

  Args:
    path: file written by `data_prep/convert_lpips_weights.py`.

  Returns:
    The variables dict {'params': ...} for `LPIPS().apply`.

  Raises:
    FileNotFoundError: one line naming the path and the converter command.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f'LPIPS weights not found at {path!r}; create them with: '
        f'{CONVERT_COMMAND.replace("PATH", path)}')
  with open(path, 'rb') as f:
    state = serialization.msgpack_restore(f.read())
  return jax.tree_util.tree_map(jnp.asarray, state)
