"""SSIM / PSNR agree with scikit-image; MSE with NumPy; ranges as documented."""

import jax
import numpy as np
import pytest
from skimage import metrics as skm

from bil_jax import metrics


def _images(seed):
  """Random and structured [-1, 1] image pairs, [4, 32, 40, 3]."""
  rng = np.random.default_rng(seed)
  h, w = 32, 40
  noise = rng.uniform(-1, 1, (2, h, w, 3))
  yy, xx = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing='ij')
  grad = np.stack([xx, yy, xx * yy], -1)
  checker = np.where((np.arange(h)[:, None] // 4 + np.arange(w) // 4) % 2, 0.8,
                     -0.6)[..., None].repeat(3, -1)
  a = np.stack([noise[0], grad, checker, grad])
  b = np.stack([
      noise[1],
      np.clip(grad + 0.1 * rng.standard_normal((h, w, 3)), -1, 1),
      np.roll(checker, 1, axis=1),
      0.5 * grad,
  ])
  return a.astype(np.float32), b.astype(np.float32)


def _unit(x):
  return (x.astype(np.float64) + 1) / 2


@pytest.mark.parametrize('seed', [0, 1])
def test_ssim_matches_skimage(seed):
  a, b = _images(seed)
  got = np.asarray(jax.jit(metrics.ssim)(a, b))
  want = [
      skm.structural_similarity(_unit(x), _unit(y), gaussian_weights=True, sigma=1.5,
                                use_sample_covariance=False, data_range=1, channel_axis=-1)
      for x, y in zip(a, b)
  ]
  assert got.shape == (4,)
  np.testing.assert_allclose(got, want, atol=1e-4)


@pytest.mark.parametrize('seed', [0, 1])
def test_psnr_matches_skimage_on_unit_range(seed):
  a, b = _images(seed)
  got = np.asarray(jax.jit(metrics.psnr)(a, b))
  want = [skm.peak_signal_noise_ratio(_unit(x), _unit(y), data_range=1) for x, y in zip(a, b)]
  np.testing.assert_allclose(got, want, atol=1e-4)


def test_mse_is_on_minus_one_one_range():
  a, b = _images(2)
  got = np.asarray(jax.jit(metrics.mse)(a, b))
  want = np.mean((a.astype(np.float64) - b) ** 2, axis=(1, 2, 3))
  np.testing.assert_allclose(got, want, rtol=1e-6)
  # PSNR (on [0, 1]) and MSE (on [-1, 1]) are tied by psnr = 10 log10(4 / mse).
  np.testing.assert_allclose(np.asarray(metrics.psnr(a, b)), 10 * np.log10(4 / want), atol=1e-4)


def test_identical_images():
  a, _ = _images(3)
  out = metrics.image_metrics(a, a)
  np.testing.assert_allclose(out['ssim'], 1.0, atol=1e-6)
  np.testing.assert_array_equal(out['mse'], 0.0)
  assert np.all(np.isposinf(out['psnr']))


def test_image_metrics_without_lpips_params_has_no_lpips_entry():
  a, b = _images(4)
  out = jax.jit(metrics.image_metrics)(a, b)
  assert set(out) == {'ssim', 'psnr', 'mse'}
  for v in out.values():
    assert v.shape == (4,)
