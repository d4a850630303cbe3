"""The torch -> Flax VGG16 converter and the Flax VGG16 reproduce torchvision's features.

torchvision is unavailable, so the reference is a hand-built ``nn.Sequential`` with exactly
torchvision's ``vgg16().features`` indexing (config "D": conv, ReLU per conv, max-pool per
block), randomly initialised (kaiming fan-out like torchvision, random biases).
"""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bil_jax.models import vgg
from data_prep import convert_torch_weights

torch = pytest.importorskip("torch")
import lpips_reference  # pylint: disable=g-import-not-at-top,wrong-import-position

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def torch_vgg16_features():
  features = lpips_reference.torchvision_vgg16_features()
  torch.manual_seed(0)
  for m in features:
    if isinstance(m, torch.nn.Conv2d):
      torch.nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
      torch.nn.init.normal_(m.bias, 0.0, 0.1)
  return features.eval()


@pytest.fixture(scope="module")
def torch_weights(tmp_path_factory):
  """(features module, path of a torchvision-style vgg16 .pth incl. classifier keys)."""
  features = torch_vgg16_features()
  state = {f"features.{k}": v for k, v in features.state_dict().items()}
  state["classifier.0.weight"] = torch.zeros(8, 4)  # must be ignored
  state["classifier.0.bias"] = torch.zeros(8)
  path = str(tmp_path_factory.mktemp("torch") / "vgg16-397923af.pth")
  torch.save(state, path)
  return features, path


@pytest.fixture(scope="module")
def flax_weights(torch_weights, tmp_path_factory):
  out_dir = tmp_path_factory.mktemp("flax")
  out = str(out_dir / "vgg16.msgpack")
  assert convert_torch_weights.main(["--torch_weights", torch_weights[1], "--out", out]) == 0
  assert os.listdir(out_dir) == ["vgg16.msgpack"]  # no temporary file left behind
  return out


def test_torch_indices_match_torchvision():
  features = torch_vgg16_features()
  conv_idx = [i for i, m in enumerate(features) if isinstance(m, torch.nn.Conv2d)]
  assert [vgg.TORCH_INDEX[n] for n in vgg.CONV_NAMES] == conv_idx
  assert conv_idx[-1] == 28 and len(features) == 31


def test_converted_features_equal_torch_features(torch_weights, flax_weights):
  """Every ReLU output at 32x32, NHWC vs NCHW, same ImageNet normalisation."""
  features, _ = torch_weights
  params = vgg.load_vgg16_params(flax_weights)
  images = np.random.RandomState(0).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
  got = jax.jit(lambda p, x: vgg.vgg16_features(p, x, layers=vgg.RELU_NAMES))(params, images)

  x = torch.from_numpy((((images + 1) / 2 - MEAN) / STD).transpose(0, 3, 1, 2))
  expected = []
  with torch.no_grad():
    for m in features:
      x = m(x)
      if isinstance(m, torch.nn.ReLU):
        expected.append(x.numpy().transpose(0, 2, 3, 1).copy())
  assert len(got) == len(expected) == 13
  for name, a, b in zip(vgg.RELU_NAMES, got, expected):
    assert a.shape == b.shape, name
    scale = max(1.0, float(np.abs(b).max()))
    np.testing.assert_allclose(np.asarray(a) / scale, b / scale, atol=1e-4, err_msg=name)


def test_default_layers_and_gradients_flow_to_images_only(flax_weights):
  params = vgg.load_vgg16_params(flax_weights)
  images = jnp.zeros((1, 16, 16, 3))
  shapes = [f.shape for f in jax.eval_shape(vgg.vgg16_features, params, images)]
  assert shapes == [(1, 16, 16, 64), (1, 8, 8, 128), (1, 4, 4, 256), (1, 2, 2, 512), (1, 1, 1, 512)]

  def loss(p, x):
    return jnp.sum(vgg.vgg16_features(p, x, layers=("relu2_2",))[0])

  gp, gx = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, images + 0.1)
  assert all(not np.any(leaf) for leaf in jax.tree.leaves(gp))  # frozen
  assert np.any(gx)
  with pytest.raises(ValueError, match="relu9_9"):
    vgg.vgg16_features(params, images, layers=("relu9_9",))


def test_missing_weights_file_says_how_to_make_it(tmp_path):
  path = str(tmp_path / "nope" / "vgg16.msgpack")
  with pytest.raises(FileNotFoundError) as excinfo:
    vgg.load_vgg16_params(path)
  msg = str(excinfo.value)
  assert "\n" not in msg and path in msg
  assert ("python data_prep/convert_torch_weights.py "
          f"--torch_weights=vgg16-397923af.pth --out={path}") in msg


def test_unreadable_weights_file_is_a_one_line_value_error(tmp_path):
  path = tmp_path / "vgg16.msgpack"
  path.write_bytes(b"not msgpack at all \xff\xfe")
  with pytest.raises(ValueError) as excinfo:
    vgg.load_vgg16_params(str(path))
  assert "\n" not in str(excinfo.value) and str(path) in str(excinfo.value)


def test_missing_key_names_the_key(torch_weights, tmp_path, capsys):
  features, _ = torch_weights
  state = {f"features.{k}": v for k, v in features.state_dict().items()}
  del state["features.28.weight"]
  with pytest.raises(ValueError, match=r"'features\.28\.weight'") as excinfo:
    convert_torch_weights.convert_vgg16_state_dict(state)
  assert "\n" not in str(excinfo.value)
  pth = str(tmp_path / "broken.pth")
  torch.save(state, pth)
  out = str(tmp_path / "vgg16.msgpack")
  assert convert_torch_weights.main(["--torch_weights", pth, "--out", out]) == 1
  assert "features.28.weight" in capsys.readouterr().err
  assert not os.path.exists(out)
