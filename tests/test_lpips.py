"""The Flax LPIPS-alex port equals a hand-written PyTorch copy of the official one.

The reference (tests/lpips_reference.py) re-implements
`lpips.LPIPS(net='alex', version='0.1')` forward with `normalize=False` from torch
primitives. Backbone and linear weights are random (fixed seed; linear weights
positive like the official ones) and go through the converter. The VGG trunk is
tested in tests/test_perceptual.py.
"""

import os

import jax
import numpy as np
import pytest

from bil_jax import metrics
from bil_jax.models import lpips as lpips_lib
from data_prep import convert_lpips_weights

torch = pytest.importorskip('torch')
import lpips_reference  # pylint: disable=g-import-not-at-top,wrong-import-position

# One jitted function for all calls (eager Flax on CPU is slow to dispatch).
_lpips = jax.jit(metrics.lpips)


@pytest.fixture(scope='module')
def reference():
  model = lpips_reference.random_lpips('alex', seed=0)
  alex, lin = model.state_dicts()
  params = jax.tree_util.tree_map(np.asarray, convert_lpips_weights.convert(alex, lin))
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


_torch_lpips = lpips_reference.torch_lpips


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
  np.testing.assert_allclose(np.asarray(_lpips(params, a, b)), _torch_lpips(model, a, b), rtol=0,
                             atol=1e-5)


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
  assert convert_lpips_weights.main(
      [f'--alexnet={tmp_path / "alexnet.pth"}', f'--lin={tmp_path / "alex.pth"}',
       f'--out={out}']) == 0
  jax.tree_util.tree_map(np.testing.assert_array_equal, lpips_lib.load_lpips_params(out), params)


def test_cli_missing_file_is_one_line_error(tmp_path, capsys):
  missing = str(tmp_path / 'nope.pth')
  assert convert_lpips_weights.main(
      [f'--alexnet={missing}', f'--lin={missing}', f'--out={tmp_path / "o"}']) == 1
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
