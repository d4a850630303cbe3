"""The lookup predictors on hand-built tasks whose answers are known."""
import numpy as np
import pytest

from bil_jax import lookups

# Two 1x2 shots. Shot 0: labels [0, 1], colours red / green; shot 1: labels [1, 1],
# colours blue / white.
MAPS = np.array([[[0, 1]], [[1, 1]]], np.int32)
RED, GREEN, BLUE, WHITE = ([1., -1., -1.], [-1., 1., -1.], [-1., -1., 1.], [1., 1., 1.])
IMAGES = np.array([[[RED, GREEN]], [[BLUE, WHITE]]], np.float32)
ALL_MEAN = np.mean([RED, GREEN, BLUE, WHITE], axis=0)
LABEL1_MEAN = np.mean([GREEN, BLUE, WHITE], axis=0)


def test_label_mean():
  query = np.array([[[1, 0]], [[2, 2]]], np.int32)  # label 2 is in no shot
  out = lookups.label_mean(MAPS, IMAGES, query)
  assert out.shape == (2, 1, 2, 3) and out.dtype == np.float32
  np.testing.assert_allclose(out[0, 0, 0], LABEL1_MEAN, atol=1e-6)
  np.testing.assert_allclose(out[0, 0, 1], RED, atol=1e-6)
  np.testing.assert_allclose(out[1, 0], [ALL_MEAN, ALL_MEAN], atol=1e-6)


def test_label_pixel():
  # Pixel (0,0): label 1 only in shot 1 -> blue; label 0 only in shot 0 -> red.
  # Pixel (0,1): label 1 in both shots -> mean(green, white); label 0 in no shot at (0,1)
  # -> label 0's mean (red); label 3 nowhere -> the shots' mean.
  query = np.array([[[1, 1]], [[0, 0]], [[1, 3]]], np.int32)
  out = lookups.label_pixel(MAPS, IMAGES, query)
  assert out.shape == (3, 1, 2, 3) and out.dtype == np.float32
  np.testing.assert_allclose(out[0, 0, 0], BLUE, atol=1e-6)
  np.testing.assert_allclose(out[0, 0, 1], np.mean([GREEN, WHITE], axis=0), atol=1e-6)
  np.testing.assert_allclose(out[1, 0, 0], RED, atol=1e-6)
  np.testing.assert_allclose(out[1, 0, 1], RED, atol=1e-6)
  np.testing.assert_allclose(out[2, 0, 1], ALL_MEAN, atol=1e-6)


def test_label_pixel_reproduces_a_shot_whose_map_is_unique_per_pixel():
  rng = np.random.default_rng(0)
  maps = np.stack([np.arange(12).reshape(3, 4), 20 + np.arange(12).reshape(3, 4)])
  images = rng.uniform(-1, 1, (2, 3, 4, 3)).astype(np.float32)
  np.testing.assert_allclose(lookups.label_pixel(maps, images, maps), images, atol=1e-6)


def test_nearest_shot_and_ties():
  # Query [1, 1] agrees with shot 1 on both pixels, shot 0 on one -> shot 1.
  # Query [0, 0] agrees with shot 0 on one pixel, shot 1 on none -> shot 0.
  # Query [2, 1] agrees with each shot on one pixel (a tie) -> shot 0.
  query = np.array([[[1, 1]], [[0, 0]], [[2, 1]]], np.int32)
  out = lookups.nearest_shot(MAPS, IMAGES, query)
  np.testing.assert_array_equal(out, IMAGES[[1, 0, 0]])
  np.testing.assert_allclose(lookups.map_agreement(query, MAPS),
                             [[0.5, 1.0], [0.5, 0.0], [0.5, 0.5]])


def test_predict_all_order_and_shape():
  query = np.array([[[1, 0]]], np.int32)
  out = lookups.predict_all(MAPS, IMAGES, query)
  assert out.shape == (3, 1, 1, 2, 3)
  np.testing.assert_array_equal(out[2], lookups.nearest_shot(MAPS, IMAGES, query))
  assert tuple(lookups.PREDICTORS) == ("lookup_label", "lookup_pixel", "nearest_shot")


def test_bad_shapes_name_the_fault():
  with pytest.raises(ValueError, match="query maps"):
    lookups.label_mean(MAPS, IMAGES, np.zeros((1, 2, 2), np.int32))
  with pytest.raises(ValueError, match="support maps"):
    lookups.label_pixel(MAPS, IMAGES[..., :2], MAPS)
