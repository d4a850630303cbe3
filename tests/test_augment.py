"""Tests of the joint augmentation of label maps and images (flip, crop, rotation)."""
import numpy as np
import pytest

from bil_jax.data import augment
from bil_jax.data import synthetic
from tests.data_fixtures import C, aug_cfg

# ---------------------------------------------------------------------------
# Augmentation
# ---------------------------------------------------------------------------


def _class_coloured_batch(n, h, w, seed=0):
  maps = synthetic.generate_task(seed, 'train', 0, C, h, w, n)[1]
  palette = np.random.default_rng(1).uniform(-1, 1, (C, 3)).astype(np.float32)
  return maps.astype(np.int32), palette[maps], palette


@pytest.mark.parametrize('hw', [(32, 32), (128, 256)])
def test_augmentation_keeps_map_and_image_aligned(hw):
  """Image colour is a function of the class id; after a joint warp it still
  is, except within 2 pixels of a class boundary (bilinear blending)."""
  maps, images, palette = _class_coloured_batch(6, *hw)
  out_m, out_i = augment.augment_pairs(maps, images, np.random.default_rng(3),
                                       aug_cfg(crop=0.8, rot=30.0))
  assert out_m.dtype == np.int32 and out_i.dtype == np.float32
  assert out_m.shape == maps.shape and out_i.shape == images.shape
  assert not np.array_equal(out_m, maps)
  bad = np.abs(palette[out_m] - out_i).max(-1) > 1e-4
  assert bad.mean() < 0.3
  # Pixels with a uniform 5x5 neighbourhood in the warped map match exactly
  # (pixels within 2 of the image border are not checked).
  pad = np.pad(out_m, ((0, 0), (2, 2), (2, 2)), constant_values=-1)
  h, w = hw
  uniform = np.ones(out_m.shape, bool)
  for dy in range(5):
    for dx in range(5):
      uniform &= pad[:, dy:dy + h, dx:dx + w] == out_m
  assert not np.any(bad & uniform)


def test_flip_only_mirrors_map_and_image_together():
  maps, images, _ = _class_coloured_batch(16, 16, 16)
  out_m, out_i = augment.augment_pairs(maps, images, np.random.default_rng(0),
                                       aug_cfg(crop=1.0, rot=0.0))
  flipped = 0
  for m, x, m2, x2 in zip(maps, images, out_m, out_i):
    if np.array_equal(m2, m[:, ::-1]):
      np.testing.assert_allclose(x2, x[:, ::-1], atol=1e-6)
      flipped += 1
    else:
      np.testing.assert_array_equal(m2, m)
      np.testing.assert_allclose(x2, x, atol=1e-6)
  assert 0 < flipped < 16


def test_no_augmentation_is_identity():
  maps, images, _ = _class_coloured_batch(3, 16, 16)
  for cfg in (None, aug_cfg(flip=False, crop=1.0, rot=0.0)):
    out_m, out_i = augment.augment_pairs(maps, images, np.random.default_rng(0), cfg)
    np.testing.assert_array_equal(out_m, maps)
    np.testing.assert_allclose(out_i, images, atol=1e-6)
  ref = augment.augment_reference(images, np.random.default_rng(0), None)
  np.testing.assert_allclose(ref, images, atol=1e-6)


def test_crop_zooms_in():
  """A centred crop of fraction f scales content by 1/f about the centre."""
  x = np.zeros((1, 32, 32, 1), np.float32)
  x[0, 6:26, 6:26] = 1.0  # a 20x20 square around the centre 16x16 window
  p = augment.WarpParams(flip=np.array([False]), scale=np.array([0.5]), center_y=np.array([16.0]),
                         center_x=np.array([16.0]), angle=np.array([0.0]))
  _, out = augment.apply_warp(p, None, x)
  assert out[0, :, :, 0].min() == 1.0  # the square now fills the image
