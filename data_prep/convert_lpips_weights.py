r"""Converts official PyTorch LPIPS v0.1 weights (AlexNet or VGG16 trunk) to a Flax file.

AlexNet (`--net=alex`, the default; the evaluation metric) needs two official files:

  * torchvision's ImageNet AlexNet state dict, `alexnet-owt-7be5be79.pth`
    (https://download.pytorch.org/models/alexnet-owt-7be5be79.pth, what
    `torchvision.models.alexnet(pretrained=True)` downloads); only the keys
    `features.{0,3,6,8,10}.weight` / `.bias` are used.
  * the LPIPS repository's linear-head weights `lpips/weights/v0.1/alex.pth`
    (https://github.com/richzhang/PerceptualSimilarity, also shipped inside
    the `lpips` PyPI wheel) with keys `lin{0..4}.model.1.weight`, shape
    [1, C, 1, 1] (that file holds CUDA tensors; it is loaded onto the CPU).

VGG16 (`--net=vgg`, the perceptual loss `loss.perceptual="lpips_vgg"`) needs

  * torchvision's ImageNet VGG16 state dict, `vgg16-397923af.pth`
    (https://download.pytorch.org/models/vgg16-397923af.pth); only the 13
    convolutions `features.{0,2,...,28}` are used;
  * the LPIPS linear heads `lpips/weights/v0.1/vgg.pth` (inside the `lpips`
    PyPI wheel, which is a zip: `pip download --no-deps lpips==0.1.4`, then
    unzip it), keys `lin{0..4}.model.1.weight` of shape [1, C, 1, 1],
    C = 64, 128, 256, 512, 512.

Usage:

  python -m data_prep.convert_lpips_weights \
    --alexnet=alexnet-owt-7be5be79.pth --lin=alex.pth --out=lpips_alex.msgpack
  python -m data_prep.convert_lpips_weights --net=vgg \
    --vgg16=vgg16-397923af.pth --lin=vgg.pth --out=lpips_vgg.msgpack

The output is `flax.serialization.msgpack_serialize` of the variables dict
that `bil_jax.models.lpips.LPIPS(net=...)` expects; read it with
`bil_jax.models.lpips.load_lpips_params(path, net)` (for the training loss, set
`--config.loss.vgg_weights` to the VGG file). Reading .pth files needs PyTorch;
`convert` and `convert_vgg` themselves take any mapping of arrays/tensors.
"""

import argparse
import os
import sys
from typing import Any, Dict, Mapping

import numpy as np

# Same constants as bil_jax.models.lpips (kept local so the converter does not
# import JAX): torchvision `features` indices and output channels.
_TORCH_INDICES = (0, 3, 6, 8, 10)
_CHANNELS = (64, 192, 384, 256, 256)
_KERNELS = (11, 5, 3, 3, 3)
_IN_CHANNELS = (3, 64, 192, 384, 256)
_VGG_CHANNELS = (64, 128, 256, 512, 512)  # bil_jax.models.vgg.WIDTHS


def _to_numpy(x: Any) -> np.ndarray:
  if hasattr(x, 'detach'):  # torch.Tensor
    x = x.detach().cpu().numpy()
  return np.asarray(x, dtype=np.float32)


def _get(state_dict: Mapping[str, Any], key: str, shape, what: str) -> np.ndarray:
  if key not in state_dict:
    raise KeyError(f'{what} state dict has no key {key!r}')
  value = _to_numpy(state_dict[key])
  if value.shape != tuple(shape):
    raise ValueError(f'{what} key {key!r} has shape {value.shape}, '
                     f'expected {tuple(shape)}')
  return value


def convert(alexnet_state_dict: Mapping[str, Any], lin_state_dict: Mapping[str,
                                                                           Any]) -> Dict[str, Any]:
  """Builds the Flax variables of `LPIPS` from the two PyTorch state dicts.

  Args:
    alexnet_state_dict: torchvision AlexNet state dict (extra keys ignored).
    lin_state_dict: official LPIPS state dict with `lin{i}.model.1.weight`
      (extra keys ignored).

  Returns:
    {'params': {'trunk': {'conv{i}': {'kernel': [k, k, in, out] (HWIO),
     'bias': [out]}}, 'lin{i}': {'kernel': [1, 1, C, 1]}}} as float32 numpy.
  """
  trunk = {}
  for i, idx in enumerate(_TORCH_INDICES):
    out_c, in_c, k = _CHANNELS[i], _IN_CHANNELS[i], _KERNELS[i]
    w = _get(alexnet_state_dict, f'features.{idx}.weight', (out_c, in_c, k, k), 'AlexNet')
    b = _get(alexnet_state_dict, f'features.{idx}.bias', (out_c,), 'AlexNet')
    kernel = np.ascontiguousarray(w.transpose(2, 3, 1, 0))  # OIHW -> HWIO
    trunk[f'conv{i}'] = {'kernel': kernel, 'bias': b}
  return {'params': {'trunk': trunk, **_lin_params(lin_state_dict, _CHANNELS)}}


def _lin_params(lin_state_dict: Mapping[str, Any], channels) -> Dict[str, Any]:
  """Official `lin{i}.model.1.weight` [1, C, 1, 1] -> {'lin{i}': {'kernel': [1, 1, C, 1]}}."""
  params = {}
  for i, c in enumerate(channels):
    w = _get(lin_state_dict, f'lin{i}.model.1.weight', (1, c, 1, 1), 'LPIPS lin')
    params[f'lin{i}'] = {'kernel': np.ascontiguousarray(w.transpose(2, 3, 1, 0))}
  return params


def convert_vgg(vgg16_state_dict: Mapping[str, Any],
                lin_state_dict: Mapping[str, Any]) -> Dict[str, Any]:
  """Builds the Flax variables of `LPIPS(net='vgg')` from the two PyTorch state dicts.

  Args:
    vgg16_state_dict: torchvision VGG16 state dict (classifier keys ignored).
    lin_state_dict: official LPIPS v0.1 `vgg.pth` state dict.

  Returns:
    {'params': {'trunk': {'conv1_1'..'conv5_3': {'kernel': [3, 3, in, out],
     'bias': [out]}}, 'lin{i}': {'kernel': [1, 1, C, 1]}}} as float32 numpy.
  """
  # The VGG16 trunk converter imports JAX (via bil_jax.models.vgg); only here.
  from data_prep import convert_torch_weights  # pylint: disable=g-import-not-at-top
  trunk = convert_torch_weights.convert_vgg16_state_dict(vgg16_state_dict)
  return {'params': {'trunk': trunk, **_lin_params(lin_state_dict, _VGG_CHANNELS)}}


def save(variables: Mapping[str, Any], path: str) -> None:
  """Writes variables as flax msgpack atomically (tmp file + os.replace)."""
  from flax import serialization  # pylint: disable=g-import-not-at-top
  data = serialization.msgpack_serialize(variables)
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  tmp = f'{path}.tmp.{os.getpid()}'
  try:
    with open(tmp, 'wb') as f:
      f.write(data)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def _load_pth(path: str, flag: str) -> Mapping[str, Any]:
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{flag}: file not found: {path}')
  import torch  # pylint: disable=g-import-not-at-top
  state = torch.load(path, map_location='cpu', weights_only=True)
  if not isinstance(state, Mapping):
    raise ValueError(f'{flag}: {path} does not hold a state dict')
  return state


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--net', choices=('alex', 'vgg'), default='alex',
                      help='trunk: alex (evaluation metric) or vgg (perceptual loss)')
  parser.add_argument('--alexnet', help='--net=alex: torchvision alexnet-owt-7be5be79.pth')
  parser.add_argument('--vgg16', help='--net=vgg: torchvision vgg16-397923af.pth')
  parser.add_argument('--lin', required=True, help='official LPIPS weights/v0.1/{alex,vgg}.pth')
  parser.add_argument('--out', required=True, help='output Flax msgpack file')
  args = parser.parse_args(argv)
  trunk_flag = '--alexnet' if args.net == 'alex' else '--vgg16'
  trunk_path = args.alexnet if args.net == 'alex' else args.vgg16
  try:
    if not trunk_path:
      raise ValueError(f'--net={args.net} needs {trunk_flag}=PATH')
    trunk = _load_pth(trunk_path, trunk_flag)
    lin = _load_pth(args.lin, '--lin')
    variables = (convert(trunk, lin) if args.net == 'alex' else convert_vgg(trunk, lin))
    save(variables, args.out)
  except (FileNotFoundError, KeyError, ValueError) as e:
    msg = e.args[0] if e.args else str(e)
    print(f'convert_lpips_weights: error: {msg}', file=sys.stderr)
    return 1
  print(f'wrote {args.out}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
