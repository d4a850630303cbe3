"""Image-quality metrics of the paper (Sec. 5.2): SSIM, PSNR, MSE and LPIPS.

All functions are pure and jittable, take two batches of float images NHWC
in [-1, 1] (the project convention) and return one value per image, [B].

Value range each metric is computed on:

  * `ssim`: images mapped to [0, 1] (x -> (x + 1) / 2), Gaussian window of
    size 11 and sigma 1.5, K1 = 0.01, K2 = 0.03, data range 1, valid
    (un-padded) filtering, mean over pixels and channels (dm-pix). Equals
    skimage's `structural_similarity(..., gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=1, channel_axis=-1)`.
  * `psnr`: images mapped to [0, 1], peak 1: -10 log10(MSE_[0,1]) (dm-pix).
    Identical images give +inf.
  * `mse`: on the [-1, 1] images as they are: mean over H, W, C of (a - b)^2.
    Note MSE_[-1,1] = 4 * MSE_[0,1], so psnr = 10 log10(4 / mse).
  * `lpips`: on the [-1, 1] images (the official LPIPS with normalize=False).

Why MSE on [-1, 1] but PSNR on [0, 1]: the paper's per-image means satisfy
Jensen's bound mean(PSNR) >= 10 log10(4 / mean(MSE)) with a plausible gap
under this convention, e.g. Tab. 1 PG2 (5-shot): MSE 0.040 -> bound 20.0 dB,
reported 20.97 dB; every row of Tabs. 1 and 2 is 0.4-1.5 dB above its bound.
With MSE on [0, 1] the same row would need a 7 dB Jensen gap
(10 log10(1 / 0.040) = 14.0 dB), which is implausible for faces. (Tab. 3,
street views, is inconsistent with this convention: e.g. MSE 0.028 gives a
bound of 21.5 dB against a reported 19.3 dB, which no per-image averaging can
produce; those numbers must come from a different computation, and we do not
try to reproduce it.)
"""

from typing import Any, Dict, Optional

import dm_pix as pix
import jax

from bil_jax.models import lpips as lpips_lib


def to_unit_range(x: jax.Array) -> jax.Array:
  """Maps images from [-1, 1] to [0, 1]."""
  return (x + 1.0) * 0.5


def ssim(a: jax.Array, b: jax.Array) -> jax.Array:
  """SSIM on [0, 1] images. a, b: [B, H, W, C] in [-1, 1] -> [B]."""
  return pix.ssim(to_unit_range(a), to_unit_range(b), max_val=1.0, filter_size=11, filter_sigma=1.5,
                  k1=0.01, k2=0.03)


def psnr(a: jax.Array, b: jax.Array) -> jax.Array:
  """PSNR in dB on [0, 1] images (peak 1). a, b: [B, H, W, C] -> [B]."""
  return pix.psnr(to_unit_range(a), to_unit_range(b))


def mse(a: jax.Array, b: jax.Array) -> jax.Array:
  """Mean squared error on the [-1, 1] images. a, b: [B, H, W, C] -> [B]."""
  return pix.mse(a, b)


def lpips(params: Any, a: jax.Array, b: jax.Array,
          precision: Optional[jax.lax.Precision] = jax.lax.Precision.HIGHEST) -> jax.Array:
  """LPIPS (AlexNet, v0.1) distance. a, b: [B, H, W, 3] in [-1, 1] -> [B].

  Args:
    params: variables from `bil_jax.models.lpips.load_lpips_params`.
    a: first images.
    b: second images.
    precision: conv precision; HIGHEST by default so evaluation numbers do not
      depend on TF32/bf16 defaults of the accelerator.
  """
  return lpips_lib.LPIPS(precision=precision).apply(params, a, b)


def image_metrics(a: jax.Array, b: jax.Array,
                  lpips_params: Optional[Any] = None) -> Dict[str, jax.Array]:
  """All metrics of Sec. 5.2 per image.

  Args:
    a: [B, H, W, C] generated images in [-1, 1].
    b: [B, H, W, C] target images in [-1, 1].
    lpips_params: LPIPS variables; without them there is no 'lpips' entry
      (no stand-in value is ever reported).

  Returns:
    {'ssim': [B], 'psnr': [B], 'mse': [B]} plus 'lpips': [B] when
    lpips_params is given.
  """
  out = {'ssim': ssim(a, b), 'psnr': psnr(a, b), 'mse': mse(a, b)}
  if lpips_params is not None:
    out['lpips'] = lpips(lpips_params, a, b)
  return out
