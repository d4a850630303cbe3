"""Tests of the face landmarks: rasterisation into regions, validity and the readers."""
import json

import numpy as np
import pytest

from bil_jax.data import face_video
from bil_jax.data import landmarks as lm
from tests.datasets_checks import DataError, assert_one_line_naming

# ---------------------------------------------------------------------------
# Landmark rasterisation
# ---------------------------------------------------------------------------


def inside(poly: np.ndarray, hw) -> np.ndarray:
  """Pixel centres inside a polygon (even-odd ray casting): bool [H, W]."""
  ys, xs = np.mgrid[:hw[0], :hw[1]] + 0.5
  res = np.zeros(hw, bool)
  x0, y0 = poly[:, 0], poly[:, 1]
  x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
  for a, b, c, e in zip(x0, y0, x1, y1):
    crosses = (b > ys) != (e > ys)
    xint = a + (ys - b) * (c - a) / np.where(e == b, 1e-12, e - b)
    res ^= crosses & (xs < xint)
  return res


def grow(mask, r):
  out = mask.copy()
  for _ in range(r):
    g = out.copy()
    g[1:] |= out[:-1]
    g[:-1] |= out[1:]
    g[:, 1:] |= out[:, :-1]
    g[:, :-1] |= out[:, 1:]
    out = g
  return out


def test_landmark_regions_are_where_their_polygons_are():
  hw = (96, 96)
  pts = lm.template(96)
  seg = lm.rasterise(pts, *hw, line_width=1)
  assert seg.dtype == np.uint8 and seg.shape == hw
  np.testing.assert_array_equal(np.unique(seg), np.arange(7))
  masks = {c: np.zeros(hw, bool) for c in range(1, 7)}
  for c, poly in lm.region_polygons(pts):
    masks[c] |= inside(poly, hw)
  for c in range(1, 7):
    later = np.zeros(hw, bool)
    for k in range(c + 1, 7):
      later |= grow(masks[k], 2)
    # A class appears only on (or within 2 px of) its own polygons ...
    assert not np.any((seg == c) & ~grow(masks[c], 2)), c
    # ... and fills them wherever no later class paints over.
    core = ~grow(~masks[c], 1) & ~later
    assert core.any(), c
    assert np.all(seg[core] == c), c
  # Anatomy: named points land in the expected regions.
  px = lambda p: seg[int(p[1]), int(p[0])]
  assert px((pts[36] + pts[39]) / 2) == 3  # left eye centre
  assert px((pts[42] + pts[45]) / 2) == 3  # right eye centre
  assert px((pts[60] + pts[64]) / 2) == 6  # mouth centre: inner mouth
  assert px((pts[51] + pts[62]) / 2) == 5  # between outer and inner upper lip
  assert px((pts[29] + pts[33]) / 2) == 4  # nose
  assert px((pts[2] + pts[30]) / 2) == 1  # cheek
  assert seg[0, 0] == 0 and seg[-1, -1] == 0  # background


def test_nose_is_the_convex_hull_and_regions_follow_ibug_indices():
  polys = lm.region_polygons(lm.template(1.0))
  classes = [c for c, _ in polys]
  assert classes == [1, 2, 2, 3, 3, 4, 5, 6]
  face = polys[0][1]
  np.testing.assert_allclose(face[:17], lm.template(1.0)[:17])
  np.testing.assert_allclose(face[17:], lm.template(1.0)[26:16:-1])
  hull = polys[5][1]
  # Every nose point is inside or on the hull; hull vertices are nose points.
  nose = lm.template(1.0)[27:36]
  assert all(any(np.allclose(v, q) for q in nose) for v in hull)


def test_landmark_validity_and_readers(tmp_path):
  good = np.concatenate([lm.template(50.0), np.ones((68, 1))], 1)
  assert lm.is_valid(good) and lm.is_valid(good[:, :2])
  nan = good.copy()
  nan[3, 1] = np.nan
  zero = good.copy()
  zero[10, 2] = 0
  assert not lm.is_valid(None)
  assert not lm.is_valid(nan) and not lm.is_valid(zero)
  assert not lm.is_valid(np.zeros((68, 2)))  # all at one spot
  assert not lm.is_valid(good[:30])
  # OpenPose JSON: 70 points, the best of two people; none -> None.
  flat = lambda p, c: np.concatenate(
      [np.concatenate([p, np.full(
          (68, 1), c)], 1), np.zeros((2, 3))]).ravel()
  path = tmp_path / 'a_000000000007_keypoints.json'
  path.write_text(
      json.dumps({
          'people': [{'face_keypoints_2d': flat(good[:, :2] + 1, 0.2).tolist()},
                     {'face_keypoints_2d': flat(good[:, :2], 0.9).tolist()}]
      }))
  got = lm.read_openpose_json(str(path))
  np.testing.assert_allclose(got[:, :2], good[:, :2], atol=1e-4)
  assert face_video.frame_number(str(path)) == 7
  path.write_text(json.dumps({'people': []}))
  assert lm.read_openpose_json(str(path)) is None
  path.write_text('{not json')
  with pytest.raises(DataError) as err:
    lm.read_openpose_json(str(path))
  assert_one_line_naming(err, path)
