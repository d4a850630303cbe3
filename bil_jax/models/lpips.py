"""LPIPS (Zhang et al. 2018), version 0.1, AlexNet or VGG16 trunk, in Flax Linen.

A faithful port of the official PyTorch `lpips.LPIPS(net=..., version='0.1')`
forward pass (https://github.com/richzhang/PerceptualSimilarity) with
`normalize=False`, i.e. inputs are images in [-1, 1]:

  1. ScalingLayer: x -> (x - shift) / scale with the official per-channel
     constants (see `_SHIFT`, `_SCALE`).
  2. The trunk's five feature maps:
     * net='alex' (the evaluation metric): torchvision AlexNet `features[:12]`,
       the outputs of the five ReLUs (torchvision indices 1, 4, 7, 9, 11):
         conv 11x11 stride 4 pad 2 -> 64,  relu   (relu1)
         maxpool 3 stride 2,
         conv 5x5 pad 2 -> 192,            relu   (relu2)
         maxpool 3 stride 2,
         conv 3x3 pad 1 -> 384,            relu   (relu3)
         conv 3x3 pad 1 -> 256,            relu   (relu4)
         conv 3x3 pad 1 -> 256,            relu   (relu5)
       PyTorch's MaxPool2d(3, 2) has no padding and floors the output size,
       which is 'VALID' pooling here; the convolutions use the same explicit
       symmetric zero padding as PyTorch.
     * net='vgg' (the perceptual loss L_P, Eq. 6): torchvision VGG16
       `features[:30]` (`bil_jax.models.vgg.VGG16Features`), the outputs of
       relu1_2, relu2_2, relu3_3, relu4_3 and relu5_3 (64, 128, 256, 512, 512
       channels), i.e. LPIPS's slices features[0:4], [4:9], [9:16], [16:23],
       [23:30].
  3. Each feature map is divided by (its L2 norm over channels + 1e-10)
     (as a multiplication by the reciprocal, which XLA does anyway).
  4. Squared difference of the two normalised feature maps, a 1x1 linear head
     without bias per layer (the learned weights, non-negative in the official
     files), a spatial mean, and a sum over the five layers
     (`lpips_from_features`, shared by both trunks).

Parameters are produced by `data_prep/convert_lpips_weights.py` from the
torchvision trunk weights and the official LPIPS v0.1 linear weights
(`lpips/weights/v0.1/{alex,vgg}.pth`), and read with `load_lpips_params`. The
parameter tree is

  {'params': {'trunk': alex: {'conv0'..'conv4': {'kernel', 'bias'}}
                       vgg:  {'conv1_1'..'conv5_3': {'kernel', 'bias'}},
              'lin0'..'lin4': {'kernel': [1, 1, C, 1]}}}

Layouts: images NHWC, kernels HWIO (PyTorch OIHW transposed by the converter).

Numerics: in the `LPIPS` module both batches go through the trunk as one [2B]
batch and the normalised difference is written so that identical images give
exactly 0 (see `normalized_difference`). Against a PyTorch reference of the
official forward the float32 CPU results agree to ~3e-7 absolute.
`precision=None` uses the platform default (TF32 convolutions on recent NVIDIA
GPUs, fine for a training loss); `bil_jax.metrics.lpips` evaluates with HIGHEST.
`lpips_loss` (the training loss) runs the trunk on each batch separately so
that no gradient is computed through the target images' features.
"""

import os
from typing import Any, Mapping, Optional, Sequence, Tuple

import flax.linen as nn
from flax import serialization
import jax
import jax.numpy as jnp
import numpy as np

from bil_jax.models import vgg

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
NETS = ('alex', 'vgg')
# Channels of the five feature maps (= input channels of the lin heads).
NET_CHANNELS = {'alex': CHANNELS, 'vgg': vgg.WIDTHS}
NORM_EPS = 1e-10

CONVERT_COMMANDS = {
    'alex': ('python -m data_prep.convert_lpips_weights '
             '--alexnet=alexnet-owt-7be5be79.pth --lin=alex.pth --out=PATH'),
    'vgg': ('python -m data_prep.convert_lpips_weights --net=vgg '
            '--vgg16=vgg16-397923af.pth --lin=vgg.pth --out=PATH'),
}
CONVERT_COMMAND = CONVERT_COMMANDS['alex']


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

  Computed as (f_a - f_b) * r_lo + f_hi * (r_a - r_b), algebraically equal to
  f_a * r_a - f_b * r_b, where per pixel f_hi, r_hi are the side with the larger
  reciprocal norm and r_lo is the other side's. The direct form is not robust
  under XLA: LLVM may contract one product into an FMA
  (fma(f_a, r_a, -(f_b * r_b))), leaving a ~1e-16 residue for identical images;
  here every term is an exact 0 then. Taking f_hi (not a fixed side) keeps the
  rounding error of (r_a - r_b) at |f_hi| * ulp(r_hi) ~ ulp(1): with a fixed side
  it is amplified to ~|f| * ulp(1e10) where the other side's features are all
  zero (r = 1 / eps), e.g. a dead pixel of a ReLU map.

  Args:
    f_a: [B, H, W, C] features.
    f_b: [B, H, W, C] features.
    r_a: [B, H, W, 1] `inverse_norm(f_a)`.
    r_b: [B, H, W, 1] `inverse_norm(f_b)`.
  """
  a_is_hi = r_a >= r_b
  r_lo = jnp.where(a_is_hi, r_b, r_a)
  f_hi = jnp.where(a_is_hi, f_a, f_b)
  return (f_a - f_b) * r_lo + f_hi * (r_a - r_b)


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
                  padding=((pad, pad), (pad, pad)), precision=self.precision, name=f'conv{i}')(x)
      x = nn.relu(x)
      feats.append(x)
    return feats


def lin_head(diff: jax.Array, kernel: jax.Array,
             precision: Optional[jax.lax.Precision] = None) -> jax.Array:
  """LPIPS NetLinLayer + spatial mean. diff: [B, h, w, C], kernel: [1, 1, C, 1] -> [B]."""
  per_pixel = jnp.einsum('bhwc,c->bhw', diff,
                         kernel.reshape(-1).astype(diff.dtype), precision=precision)
  return jnp.mean(per_pixel, axis=(1, 2))


def lpips_from_features(feats_a: Sequence[jax.Array], feats_b: Sequence[jax.Array],
                        lin_kernels: Sequence[jax.Array],
                        precision: Optional[jax.lax.Precision] = None) -> Tuple[jax.Array, list]:
  """Steps 3-4 of LPIPS on trunk features, for either trunk.

  Args:
    feats_a: five [B, h_l, w_l, C_l] feature maps of the first images.
    feats_b: the same of the second images.
    lin_kernels: five [1, 1, C_l, 1] linear heads.
    precision: precision of the heads' contraction.

  Returns:
    ([B] distances, list of the five [B] per-layer terms).
  """
  terms = []
  for f_a, f_b, kernel in zip(feats_a, feats_b, lin_kernels, strict=True):
    r_a, r_b = inverse_norm(f_a), inverse_norm(f_b)
    diff = jnp.square(normalized_difference(f_a, f_b, r_a, r_b))
    terms.append(lin_head(diff, kernel, precision))
  return sum(terms[1:], terms[0]), terms


def make_trunk(net: str, widths: Optional[Sequence[int]] = None,
               precision: Optional[jax.lax.Precision] = None,
               name: Optional[str] = None) -> nn.Module:
  """The feature trunk of ``net`` ('alex' | 'vgg'); ``widths`` narrows VGG's blocks."""
  if net == 'alex':
    return AlexNetFeatures(precision=precision, name=name)
  if net == 'vgg':
    return vgg.VGG16Features(widths=tuple(widths or vgg.WIDTHS), precision=precision, name=name)
  raise ValueError(f'LPIPS net {net!r} is not one of {list(NETS)}')


class _LinKernel(nn.Module):
  """Holds one LPIPS linear head's kernel [1, 1, C, 1] (the official 1x1 conv, no bias)."""
  channels: int

  @nn.compact
  def __call__(self) -> jax.Array:
    return self.param('kernel', nn.initializers.lecun_normal(), (1, 1, self.channels, 1))


class LPIPS(nn.Module):
  """LPIPS distance, v0.1, for images in [-1, 1].

  Attributes:
    net: 'alex' (default; the evaluation metric) or 'vgg'.
    widths: VGG block widths (None: VGG16's); ignored for 'alex'.
    precision: see `AlexNetFeatures`.
  """
  net: str = 'alex'
  widths: Optional[Sequence[int]] = None
  precision: Optional[jax.lax.Precision] = None

  @nn.compact
  def __call__(self, a: jax.Array, b: jax.Array, per_layer: bool = False) -> Any:
    """Distance between image batches.

    Args:
      a: [B, H, W, 3] images in [-1, 1].
      b: [B, H, W, 3] images in [-1, 1].
      per_layer: also return the per-layer terms.

    Returns:
      [B] distances, or ([B], list of five [B]) when per_layer.
    """
    trunk = make_trunk(self.net, self.widths, self.precision, name='trunk')
    # One trunk pass over [a; b]: both halves then go through the same ops.
    n = a.shape[0]
    feats = trunk(scaling_layer(jnp.concatenate([a, b], axis=0)))
    kernels = [_LinKernel(f.shape[-1], name=f'lin{i}')() for i, f in enumerate(feats)]
    total, terms = lpips_from_features([f[:n] for f in feats], [f[n:] for f in feats], kernels,
                                       self.precision)
    if per_layer:
      return total, terms
    return total


def _vgg_widths(variables: Mapping[str, Any]) -> Tuple[int, ...]:
  return vgg.widths_of(variables['params']['trunk'])


def lpips_loss(variables: Mapping[str, Any], fake: jax.Array, real: jax.Array, net: str = 'vgg',
               precision: Optional[jax.lax.Precision] = None) -> jax.Array:
  """LPIPS as a training loss: the batch mean of LPIPS(fake, real) -> scalar.

  The value equals ``LPIPS(net).apply(variables, fake, real).mean()``; the trunk runs on
  ``fake`` and ``real`` separately and ``real``'s features are constants, so the backward
  pass only goes through the fake images' trunk. The weights get no gradient.

  Args:
    variables: {'params': {'trunk', 'lin0'..'lin4'}} from `load_lpips_params`
      (trunk widths may be narrower than the official ones, for tests).
    fake: [B, H, W, 3] generated images in [-1, 1] (gradients flow to them).
    real: [B, H, W, 3] target images in [-1, 1].
    net: 'vgg' (Eq. 6) or 'alex'.
    precision: conv and head precision (None = platform default).
  """
  params = jax.lax.stop_gradient(variables['params'])
  widths = _vgg_widths(variables) if net == 'vgg' else None
  trunk = make_trunk(net, widths, precision)

  def features(x):
    return trunk.apply({'params': params['trunk']}, scaling_layer(x))

  feats_fake = features(fake)
  feats_real = jax.lax.stop_gradient(features(real))
  kernels = [params[f'lin{i}']['kernel'] for i in range(len(feats_fake))]
  total, _ = lpips_from_features(feats_fake, feats_real, kernels, precision)
  return jnp.mean(total)


def validate_lpips_params(variables: Any, net: str, source: str) -> None:
  """Raises a one-line ValueError unless ``variables`` are official-size LPIPS-``net``."""
  try:
    params = variables['params']
    trunk = params['trunk']
    lins = [tuple(np.shape(params[f'lin{i}']['kernel'])) for i in range(5)]
  except (KeyError, TypeError):
    raise ValueError(f'{source} is not an LPIPS-{net} params file '
                     '(no params/trunk or lin0..lin4 kernels).') from None
  expected = [(1, 1, c, 1) for c in NET_CHANNELS[net]]
  if lins != expected:
    raise ValueError(f'{source}: LPIPS lin kernels have shapes {lins}, expected '
                     f'{expected} for net={net!r}.')
  if net == 'vgg':
    vgg.validate_vgg16_params(trunk, source=source)


def load_lpips_params(path: str, net: str = 'alex') -> Any:
  """Reads converted LPIPS parameters (flax msgpack) written by the converter.

  Args:
    path: file written by `data_prep/convert_lpips_weights.py` (with `--net=vgg` for
      net='vgg').
    net: 'alex' or 'vgg'; the file's lin heads must have that net's widths.

  Returns:
    The variables dict {'params': ...} for `LPIPS(net=net).apply` / `lpips_loss`.

  Raises:
    FileNotFoundError: one line naming the path and the converter command.
    ValueError: one line naming the path and the converter command when the file is
      not LPIPS-``net`` parameters.
  """
  command = CONVERT_COMMANDS[net].replace('PATH', path)
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f'LPIPS-{net} weights not found at {path!r}; create them with: {command}')
  try:
    with open(path, 'rb') as f:
      state = serialization.msgpack_restore(f.read())
    validate_lpips_params(state, net, repr(path))
  except ValueError as e:
    raise ValueError(f'{e} Recreate it with: {command}') from None
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f'Cannot read LPIPS-{net} weights {path!r} ({type(e).__name__}); '
                     f'recreate them with: {command}') from None
  return jax.tree_util.tree_map(jnp.asarray, state)
