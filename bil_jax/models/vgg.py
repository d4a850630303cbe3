"""A frozen VGG16 feature extractor (torchvision's ``vgg16().features``, config "D") for the
perceptual loss.

Parameters are a dict {"conv{b}_{k}": {"kernel": [3, 3, Cin, Cout] HWIO, "bias": [Cout]}} for
the 13 convs conv1_1 ... conv5_3; ``TORCH_INDEX`` gives each one's index in torchvision's
``features`` Sequential (so ``features.{i}.weight`` in OIHW is the kernel transposed to HWIO).
The file on disk is ``flax.serialization.msgpack_serialize`` of that dict of numpy arrays,
written by ``data_prep/convert_torch_weights.py``.
"""
import os
from typing import Any, Mapping, Optional, Sequence

import flax.linen as nn
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np

# (name, out channels) of the convs in order, per block; a 2x2 max-pool ends each block.
BLOCKS = (
    (("conv1_1", 64), ("conv1_2", 64)),
    (("conv2_1", 128), ("conv2_2", 128)),
    (("conv3_1", 256), ("conv3_2", 256), ("conv3_3", 256)),
    (("conv4_1", 512), ("conv4_2", 512), ("conv4_3", 512)),
    (("conv5_1", 512), ("conv5_2", 512), ("conv5_3", 512)),
)
CONV_NAMES = tuple(name for block in BLOCKS for name, _ in block)
RELU_NAMES = tuple("relu" + name[len("conv"):] for name in CONV_NAMES)
DEFAULT_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")


def _torch_indices() -> dict[str, int]:
  """Index of each conv in torchvision's ``features``: conv, relu per conv, pool per block."""
  index, out = 0, {}
  for block in BLOCKS:
    for name, _ in block:
      out[name] = index
      index += 2
    index += 1
  return out


TORCH_INDEX = _torch_indices()  # conv1_1 -> 0, conv1_2 -> 2, conv2_1 -> 5, ..., conv5_3 -> 28
IN_CHANNELS = {
    name: cin
    for name, cin in zip(CONV_NAMES, (3,) + tuple(c for block in BLOCKS for _, c in block)[:-1])
}
OUT_CHANNELS = {name: c for block in BLOCKS for name, c in block}
WIDTHS = tuple(block[0][1] for block in BLOCKS)  # (64, 128, 256, 512, 512) per block

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CONVERT_HINT = ("python data_prep/convert_torch_weights.py "
                "--torch_weights=vgg16-397923af.pth --out={path}")


def imagenet_normalize(images: jnp.ndarray) -> jnp.ndarray:
  """Images in [-1, 1] [B, H, W, 3] -> ImageNet-normalised ((x + 1) / 2 - mean) / std."""
  x = (images + 1.0) * 0.5
  mean = jnp.asarray(IMAGENET_MEAN, images.dtype)
  std = jnp.asarray(IMAGENET_STD, images.dtype)
  return (x - mean) / std


class VGG16Features(nn.Module):
  """VGG16 convolutional trunk returning the requested ReLU activations.

  Attributes:
    layers: names from ``RELU_NAMES``; the network stops after the deepest one.
    widths: output channels of each of the five blocks (VGG16: ``WIDTHS``; tests use
      narrower trunks).
    precision: conv precision (None = platform default).
  """
  layers: Sequence[str] = DEFAULT_LAYERS
  widths: Sequence[int] = WIDTHS
  precision: Optional[jax.lax.Precision] = None

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> list[jnp.ndarray]:
    """x: [B, H, W, 3] (already normalised) -> list of [B, H / 2**(block-1), W / 2**(block-1), C]."""
    wanted = check_layers(self.layers)
    last = max(RELU_NAMES.index(name) for name in wanted)
    feats = {}
    k = 0
    for b, (block, width) in enumerate(zip(BLOCKS, self.widths)):
      if b > 0:
        x = nn.max_pool(x, (2, 2), strides=(2, 2), padding="VALID")
      for name, _ in block:
        x = nn.relu(
            nn.Conv(width, (3, 3), padding=((1, 1), (1, 1)), precision=self.precision,
                    name=name)(x))
        feats[RELU_NAMES[k]] = x
        if k == last:
          return [feats[name] for name in wanted]
        k += 1
    raise AssertionError("unreachable")


def widths_of(params: Mapping[str, Any]) -> tuple[int, ...]:
  """Per-block widths of VGG16 params {"conv1_1": {"kernel": [3,3,Cin,Cout]}, ...}."""
  return tuple(int(np.shape(params[block[0][0]]["kernel"])[-1]) for block in BLOCKS)


def check_layers(names: Sequence[str]) -> tuple[str, ...]:
  """Returns ``names`` as a tuple if all are VGG16 ReLU names, else raises ValueError."""
  names = tuple(names)
  bad = [n for n in names if n not in RELU_NAMES]
  if bad or not names:
    raise ValueError(f"Unknown VGG16 layers {bad or names}; choose from {list(RELU_NAMES)}.")
  return names


def vgg16_features(params: Mapping[str, Any], images: jnp.ndarray,
                   layers: Sequence[str] = DEFAULT_LAYERS) -> list[jnp.ndarray]:
  """Frozen VGG16 features of images in [-1, 1].

  Args:
    params: {"conv1_1": {"kernel", "bias"}, ...} from ``load_vgg16_params`` (a
      {"params": ...} wrapper is accepted too). Gradients are stopped at the parameters;
      they flow to ``images``.
    images: [B, H, W, 3] in [-1, 1]; the ImageNet mean/std normalisation is applied here.
    layers: ReLU names, e.g. "relu1_2"; features come back in this order.

  Returns:
    A list of [B, H / 2**(block-1), W / 2**(block-1), C] float32 arrays (max-pools floor).
  """
  if "params" in params:
    params = params["params"]
  params = jax.lax.stop_gradient(params)
  x = imagenet_normalize(images.astype(jnp.float32))
  return VGG16Features(layers=tuple(layers), widths=widths_of(params)).apply({"params": params}, x)


def validate_vgg16_params(params: Mapping[str, Any], source: str = "params") -> None:
  """Raises a one-line ValueError unless ``params`` holds all 13 convs with VGG16 shapes."""
  for name in CONV_NAMES:
    expected = {
        "kernel": (3, 3, IN_CHANNELS[name], OUT_CHANNELS[name]), "bias": (OUT_CHANNELS[name],)
    }
    for leaf, shape in expected.items():
      try:
        got = tuple(np.shape(params[name][leaf]))
      except (KeyError, TypeError):
        raise ValueError(f"{source}: VGG16 params lack {name}/{leaf}.") from None
      if got != shape:
        raise ValueError(f"{source}: VGG16 {name}/{leaf} has shape {got}, expected {shape}.")


def load_vgg16_params(path: str) -> dict[str, dict[str, jnp.ndarray]]:
  """Reads the Flax VGG16 params file written by ``data_prep/convert_torch_weights.py``
  (or the trunk of an LPIPS-VGG file from ``data_prep/convert_lpips_weights.py --net=vgg``).

  Raises:
    FileNotFoundError: no file at ``path`` (the message says how to make one).
    ValueError: the file is not a VGG16 params file.
  """
  hint = CONVERT_HINT.format(path=path)
  if not path or not os.path.isfile(path):
    raise FileNotFoundError(f"VGG16 weights not found at {path!r}; create them with: {hint}")
  try:
    with open(path, "rb") as f:
      params = flax.serialization.msgpack_restore(f.read())
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f"Cannot read VGG16 weights {path!r} ({type(e).__name__}); "
                     f"recreate them with: {hint}") from e
  if "params" in params and "trunk" in params["params"]:
    params = params["params"]["trunk"]  # an LPIPS-VGG file holds the trunk too
  try:
    validate_vgg16_params(params, source=repr(path))
  except ValueError as e:
    raise ValueError(f"{e} Recreate them with: {hint}") from None
  return {
      name: {leaf: jnp.asarray(params[name][leaf], jnp.float32) for leaf in ("kernel", "bias")}
      for name in CONV_NAMES
  }
