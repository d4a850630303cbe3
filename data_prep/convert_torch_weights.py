r"""Converts torchvision's ImageNet VGG16 weights to the Flax params file of bil_jax.

  python data_prep/convert_torch_weights.py \
      --torch_weights=vgg16-397923af.pth --out=$WORKDIR/vgg16.msgpack

then set ``loss.vgg_weights`` to the --out path. The input is the state dict of
``torchvision.models.vgg16`` (keys ``features.{i}.weight`` OIHW and ``features.{i}.bias``;
the classifier is ignored). The output is ``flax.serialization.msgpack_serialize`` of
{"conv1_1": {"kernel": HWIO, "bias"}, ...}, read by ``bil_jax.models.vgg.load_vgg16_params``.
Needs PyTorch only to read the .pth file.
"""
import argparse
import os
import sys
import tempfile
from typing import Any, Mapping, Sequence

import flax.serialization
import numpy as np

# Allow `python data_prep/convert_torch_weights.py` from the repository root.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bil_jax.models import vgg  # pylint: disable=g-import-not-at-top


def _to_numpy(t: Any) -> np.ndarray:
  """A torch tensor or array-like -> float32 numpy array."""
  if hasattr(t, "detach"):
    t = t.detach().cpu().float().numpy()
  return np.asarray(t, dtype=np.float32)


def _strip_prefix(state_dict: Mapping[str, Any]) -> Mapping[str, Any]:
  """Drops a DataParallel "module." prefix if every key has it."""
  if state_dict and all(k.startswith("module.") for k in state_dict):
    return {k[len("module."):]: v for k, v in state_dict.items()}
  return state_dict


def convert_vgg16_state_dict(state_dict: Mapping[str, Any]) -> dict[str, dict[str, np.ndarray]]:
  """torchvision VGG16 state dict -> {"conv1_1": {"kernel": [3,3,Cin,Cout], "bias": [Cout]}, ...}.

  Keys other than the 13 conv layers' ``features.{i}.weight|bias`` are ignored.

  Raises:
    ValueError: a conv key is missing (the message names it) or a tensor has the wrong
      shape.
  """
  state_dict = _strip_prefix(state_dict)
  params = {}
  for name in vgg.CONV_NAMES:
    i = vgg.TORCH_INDEX[name]
    leaves = {}
    for leaf, torch_leaf in (("kernel", "weight"), ("bias", "bias")):
      key = f"features.{i}.{torch_leaf}"
      if key not in state_dict:
        raise ValueError(f"VGG16 state dict has no key {key!r} (needed for {name}); "
                         f"expected torchvision's vgg16 state dict.")
      leaves[leaf] = _to_numpy(state_dict[key])
    leaves["kernel"] = np.ascontiguousarray(leaves["kernel"].transpose(2, 3, 1, 0))  # OIHW->HWIO
    params[name] = leaves
  vgg.validate_vgg16_params(params, source="VGG16 state dict")
  return params


def load_torch_state_dict(path: str) -> Mapping[str, Any]:
  """Reads a .pth state dict (a {"state_dict": ...} wrapper is accepted)."""
  import torch  # pylint: disable=g-import-not-at-top
  if not os.path.isfile(path):
    raise FileNotFoundError(f"PyTorch weights not found at {path!r}; download torchvision's "
                            f"vgg16-397923af.pth first.")
  state_dict = torch.load(path, map_location="cpu", weights_only=True)
  if "state_dict" in state_dict and isinstance(state_dict["state_dict"], Mapping):
    state_dict = state_dict["state_dict"]
  return state_dict


def write_params_atomically(params: Mapping[str, Any], out: str) -> None:
  """msgpack-serialises ``params`` to a temporary file beside ``out``, then renames it."""
  out_dir = os.path.dirname(os.path.abspath(out))
  os.makedirs(out_dir, exist_ok=True)
  data = flax.serialization.msgpack_serialize(dict(params))
  fd, tmp = tempfile.mkstemp(prefix=os.path.basename(out) + ".", suffix=".tmp", dir=out_dir)
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
    os.replace(tmp, out)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def convert_file(torch_weights: str, out: str) -> None:
  """Converts the torchvision VGG16 .pth at ``torch_weights`` to the Flax file ``out``."""
  params = convert_vgg16_state_dict(load_torch_state_dict(torch_weights))
  write_params_atomically(params, out)


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--torch_weights", required=True,
                      help="torchvision vgg16 state dict, e.g. vgg16-397923af.pth")
  parser.add_argument("--out", required=True, help="Flax params file to write")
  args = parser.parse_args(argv)
  try:
    convert_file(args.torch_weights, args.out)
  except (FileNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(f"wrote {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
