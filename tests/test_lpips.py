"""The Flax LPIPS port equals a hand-written PyTorch copy of the official one.

The reference below re-implements `lpips.LPIPS(net='alex', version='0.1')`
forward with `normalize=False` (lpips 0.1.4: ScalingLayer, torchvision
AlexNet features sliced at the five ReLUs, normalize_tensor, NetLinLayer =
Sequential(Dropout, Conv2d(C, 1, 1, bias=False)) in eval mode,
spatial_average, sum), because torchvision and the lpips package are not
available here. Backbone and linear weights are random (fixed seed; linear
weights positive like the official ones) and go through the converter.
"""

import os

import jax
import numpy as np
import pytest

from bil_jax import metrics
from bil_jax.models import lpips as lpips_lib
from data_prep import convert_lpips_weights

torch = pytest.importorskip('torch')
nn = torch.nn

# One jitted function for all calls (eager Flax on CPU is slow to dispatch).
_lpips = jax.jit(metrics.lpips)


class TorchScalingLayer(nn.Module):

  def __init__(self):
    super().__init__()
    self.register_buffer('shift',
                         torch.Tensor([-.030, -.088, -.188])[None, :, None,
                                                             None])
    self.register_buffer('scale',
                         torch.Tensor([.458, .448, .450])[None, :, None, None])

  def forward(self, x):
    return (x - self.shift) / self.scale


def torchvision_alexnet_features():
  """torchvision.models.alexnet().features, same indices."""
  return nn.Sequential(
      nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
      nn.ReLU(inplace=True),
      nn.MaxPool2d(kernel_size=3, stride=2),
      nn.Conv2d(64, 192, kernel_size=5, padding=2),
      nn.ReLU(inplace=True),
      nn.MaxPool2d(kernel_size=3, stride=2),
      nn.Conv2d(192, 384, kernel_size=3, padding=1),
      nn.ReLU(inplace=True),
      nn.Conv2d(384, 256, kernel_size=3, padding=1),
      nn.ReLU(inplace=True),
      nn.Conv2d(256, 256, kernel_size=3, padding=1),
      nn.ReLU(inplace=True),
      nn.MaxPool2d(kernel_size=3, stride=2),
  )


class TorchLPIPS(nn.Module):
  """Official LPIPS forward (alex, v0.1, lpips=True, spatial=False)."""

  def __init__(self):
    super().__init__()
    self.scaling_layer = TorchScalingLayer()
    self.features = torchvision_alexnet_features()
    self.slices = [(0, 2), (2, 5), (5, 8), (8, 10), (10, 12)]
    self.chns = [64, 192, 384, 256, 256]
    self.lins = nn.ModuleList([
        nn.Sequential(nn.Dropout(), nn.Conv2d(c, 1, 1, stride=1, padding=0,
                                              bias=False))
        for c in self.chns
    ])

  def net(self, x):
    outs = []
    for start, stop in self.slices:
      for i in range(start, stop):
        x = self.features[i](x)
      outs.append(x)
    return outs

  @staticmethod
  def normalize_tensor(x, eps=1e-10):
    norm_factor = torch.sqrt(torch.sum(x**2, dim=1, keepdim=True))
    return x / (norm_factor + eps)

  def forward(self, in0, in1):
    outs0 = self.net(self.scaling_layer(in0))
    outs1 = self.net(self.scaling_layer(in1))
    val = 0
    for kk in range(len(self.chns)):
      diff = (self.normalize_tensor(outs0[kk])
              - self.normalize_tensor(outs1[kk]))**2
      val = val + self.lins[kk](diff).mean([2, 3], keepdim=True)
    return val

  def state_dicts(self):
    """(torchvision alexnet state dict, official LPIPS lin state dict)."""
    alex = {f'features.{k}': v for k, v in self.features.state_dict().items()}
    lin = {f'lin{i}.model.1.weight': l[1].weight.detach().clone()
           for i, l in enumerate(self.lins)}
    return alex, lin


@pytest.fixture(scope='module')
def reference():
  torch.manual_seed(0)
  model = TorchLPIPS()
  with torch.no_grad():
    for lin in model.lins:
      lin[1].weight.uniform_(0.0, 1.0)  # official weights are >= 0
  model.eval()
  alex, lin = model.state_dicts()
  params = jax.tree_util.tree_map(np.asarray,
                                  convert_lpips_weights.convert(alex, lin))
  return model, params


def _pairs(seed, size=64):
  rng = np.random.default_rng(seed)
  a = rng.uniform(-1, 1, (3, size, size, 3)).astype(np.float32)
  # Second image: a perturbed copy, an unrelated image and a smooth image.
  b = np.stack([
      np.clip(a[0] + 0.1 * rng.standard_normal(a[0].shape), -1, 1),
      rng.uniform(-1, 1, a[1].shape),
      np.tanh(np.cumsum(rng.standard_normal(a[2].shape), axis=0) / 8),
  ]).astype(np.float32)
  return a, b


def _torch_lpips(model, a, b):
  with torch.no_grad():
    out = model(torch.from_numpy(a).permute(0, 3, 1, 2),
                torch.from_numpy(b).permute(0, 3, 1, 2))
  return out.reshape(-1).numpy()


def test_matches_torch_reference(reference):
  model, params = reference
  for seed in (0, 1):
    a, b = _pairs(seed)
    want = _torch_lpips(model, a, b)
    got = np.asarray(_lpips(params, a, b))
    assert got.shape == (3,)
    assert np.all(want > 0)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


def test_odd_size_matches_torch_reference(reference):
  """Non-multiple sizes exercise PyTorch's floor semantics of conv/maxpool."""
  model, params = reference
  rng = np.random.default_rng(7)
  a = rng.uniform(-1, 1, (2, 77, 93, 3)).astype(np.float32)
  b = rng.uniform(-1, 1, (2, 77, 93, 3)).astype(np.float32)
  np.testing.assert_allclose(np.asarray(_lpips(params, a, b)),
                             _torch_lpips(model, a, b), rtol=0, atol=1e-5)


def test_identical_images_give_zero(reference):
  _, params = reference
  a, b = _pairs(2)
  np.testing.assert_array_equal(np.asarray(_lpips(params, a, a)), 0.0)
  b[1] = a[1]  # identical pair among different ones
  got = np.asarray(_lpips(params, a, b))
  assert got[1] == 0.0 and got[0] > 0 and got[2] > 0
  odd = np.random.default_rng(3).uniform(-1, 1, (1, 45, 51, 3))
  odd = odd.astype(np.float32)
  assert float(metrics.lpips(params, odd, odd)[0]) == 0.0


def test_gradient_is_finite(reference):
  _, params = reference
  a, b = _pairs(3)
  a, b = a[:1], b[:1]
  b_black = -np.ones_like(b)  # zero trunk activations are likely somewhere
  grad = jax.jit(jax.grad(lambda x, y: metrics.lpips(params, x, y).sum()))
  for y in (a, b, b_black):
    assert np.all(np.isfinite(np.asarray(grad(a, y))))


def test_image_metrics_includes_lpips_with_params(reference):
  _, params = reference
  a, b = _pairs(4)
  out = jax.jit(metrics.image_metrics)(a, b, lpips_params=params)
  assert set(out) == {'ssim', 'psnr', 'mse', 'lpips'}
  np.testing.assert_allclose(out['lpips'], _lpips(params, a, b), atol=1e-7)


def test_param_tree_matches_flax_init(reference):
  _, params = reference
  x = jax.ShapeDtypeStruct((1, 64, 64, 3), np.float32)
  init = jax.eval_shape(lpips_lib.LPIPS().init, jax.random.PRNGKey(0), x, x)
  shapes = lambda t: jax.tree_util.tree_map(np.shape, t)
  assert shapes(params) == shapes(init)


def test_save_and_load_roundtrip(reference, tmp_path):
  _, params = reference
  path = str(tmp_path / 'lpips_alex.msgpack')
  convert_lpips_weights.save(params, path)
  assert os.listdir(tmp_path) == ['lpips_alex.msgpack']  # no tmp file left
  loaded = lpips_lib.load_lpips_params(path)
  jax.tree_util.tree_map(np.testing.assert_array_equal, loaded, params)


def test_cli_converts_pth_files(reference, tmp_path):
  model, params = reference
  alex, lin = model.state_dicts()
  torch.save(alex, tmp_path / 'alexnet.pth')
  torch.save(lin, tmp_path / 'alex.pth')
  out = str(tmp_path / 'out.msgpack')
  assert convert_lpips_weights.main([
      f'--alexnet={tmp_path / "alexnet.pth"}', f'--lin={tmp_path / "alex.pth"}',
      f'--out={out}']) == 0
  jax.tree_util.tree_map(np.testing.assert_array_equal,
                         lpips_lib.load_lpips_params(out), params)


def test_cli_missing_file_is_one_line_error(tmp_path, capsys):
  missing = str(tmp_path / 'nope.pth')
  assert convert_lpips_weights.main(
      [f'--alexnet={missing}', f'--lin={missing}',
       f'--out={tmp_path / "o"}']) == 1
  err = capsys.readouterr().err.strip()
  assert '\n' not in err and missing in err and '--alexnet' in err


def test_convert_missing_key_names_it(reference):
  model, _ = reference
  alex, lin = model.state_dicts()
  del lin['lin3.model.1.weight']
  with pytest.raises(KeyError, match='lin3.model.1.weight'):
    convert_lpips_weights.convert(alex, lin)


def test_missing_params_file_error_names_path_and_converter(tmp_path):
  path = str(tmp_path / 'missing.msgpack')
  with pytest.raises(FileNotFoundError) as e:
    lpips_lib.load_lpips_params(path)
  msg = str(e.value)
  assert '\n' not in msg and path in msg
  assert 'convert_lpips_weights' in msg
