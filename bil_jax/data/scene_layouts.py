"""Synthetic-scene layouts: random segmentation maps of occluding shapes.

A map is background (class 0) under shapes of classes 1..C-1: rotated
rectangles, ellipses, convex polygons and stripes, painted in order so that
later shapes occlude earlier ones.  :func:`paint_shapes` is shared by the
independent layouts here and the family layouts of
:mod:`bil_jax.data.scene_families`.
"""
from typing import Tuple

import numpy as np

MAX_SHAPES = 8
MIN_SHAPES = 3
SHAPE_KIND_PROBS = (0.3, 0.3, 0.25, 0.15)  # rectangle, ellipse, polygon, stripe


def pixel_grid(height: int, width: int) -> Tuple[np.ndarray, np.ndarray]:
  """Pixel-centre coordinates in units of the shorter side: [H,1], [1,W]."""
  m = float(min(height, width))
  ys = ((np.arange(height, dtype=np.float32) + 0.5) / m)[:, None]
  xs = ((np.arange(width, dtype=np.float32) + 0.5) / m)[None, :]
  return ys, xs


def extent(height: int, width: int) -> Tuple[float, float]:
  """The image's (height, width) in units of the shorter side."""
  return height / min(height, width), width / min(height, width)


def rasterise(kind: int, ys, xs, cy, cx, a, b, theta, sides, side_jitter,
              side_radius) -> np.ndarray:
  """Masks of k shapes of one kind: bool [k, H, W].

  kind: 0 rotated rectangle, 1 ellipse, 2 convex polygon (3-6 half-planes),
  3 stripe (an infinite band).  Parameters are [k] arrays ([k, 6] for the
  polygon sides); ys [H, 1], xs [1, W] are pixel-centre coordinates.
  """
  e = lambda v: v[:, None, None]
  dy, dx = ys[None] - e(cy), xs[None] - e(cx)  # [k,H,1], [k,1,W]
  if kind == 2:
    inside = np.ones((cy.shape[0], ys.shape[0], xs.shape[1]), bool)
    step = 2 * np.pi / sides
    for j in range(side_radius.shape[1]):
      phi = theta + step * (j + side_jitter[:, j])
      half = e(np.cos(phi)) * dx + e(np.sin(phi)) * dy < e(a * side_radius[:, j])
      inside &= half | e(j >= sides)
    return inside
  cos, sin = e(np.cos(theta)), e(np.sin(theta))
  pv = cos * dy - sin * dx
  if kind == 3:
    return np.abs(pv) < 0.5 * e(b)
  pu = cos * dx + sin * dy
  if kind == 0:
    return (np.abs(pu) < e(a)) & (np.abs(pv) < e(b))
  return (pu / e(a)) ** 2 + (pv / e(b)) ** 2 < 1.0


def paint_shapes(height: int, width: int, kind, active, classes, cy, cx, a, b,
                 theta, sides, side_jitter, side_radius) -> np.ndarray:
  """Paints S shapes per map over background 0, later ones on top.

  Args:
    height, width: H, W.
    kind, active, classes, cy, cx, a, b, theta, sides: [n, S] per-shape kind
      (see :func:`rasterise`), whether it is drawn, class id, centre, half
      sizes, angle and polygon side count.
    side_jitter, side_radius: [n, S, 6] polygon side parameters.

  Returns:
    uint8 [n, H, W] class ids.
  """
  n, s = kind.shape
  ys, xs = pixel_grid(height, width)
  # Rasterise each shape kind only for the shapes of that kind: [k, H, W].
  masks = np.zeros((n, s, height, width), bool)
  for k in range(4):
    idx = np.nonzero((kind == k) & active)
    if idx[0].size:
      masks[idx] = rasterise(
          k, ys, xs, cy[idx], cx[idx], a[idx], b[idx], theta[idx],
          sides[idx], side_jitter[idx], side_radius[idx])
  maps = np.zeros((n, height, width), np.uint8)
  for j in range(s):  # later shapes occlude earlier ones
    maps = np.where(masks[:, j], classes[:, j, None, None].astype(np.uint8),
                    maps)
  return maps


def sample_layouts(rng: np.random.Generator, n: int, num_classes: int,
                   height: int, width: int) -> np.ndarray:
  """Random segmentation maps: background 0 plus occluding shapes.

  Args:
    rng: numpy Generator.
    n: number of maps.
    num_classes: C >= 2.
    height, width: H, W.

  Returns:
    uint8 [n, H, W] class ids in [0, C).  Map i always has a shape of class
    1 + (i + offset) % (C - 1) on top, so n >= C - 1 maps show every class.
  """
  if num_classes < 2:
    raise ValueError(f'synthetic scenes need num_classes >= 2, got {num_classes}')
  s_max = MAX_SHAPES
  ext_y, ext_x = extent(height, width)

  def u(*shape):
    return rng.random((n, s_max) + shape, dtype=np.float32)

  kind = rng.choice(4, size=(n, s_max), p=list(SHAPE_KIND_PROBS))
  cy = u() * ext_y
  cx = u() * ext_x
  a = np.exp(np.log(0.07) + u() * np.log(0.40 / 0.07))  # half sizes
  b = a * (0.35 + 0.9 * u())
  theta = u() * np.float32(np.pi)
  sides = rng.integers(3, 7, size=(n, s_max))
  side_jitter = (u(6) - 0.5) * 0.6
  side_radius = 0.6 + 0.4 * u(6)
  num_active = rng.integers(MIN_SHAPES, s_max + 1, size=(n, 1))
  active = np.arange(s_max)[None, :] >= s_max - num_active  # top ones active
  classes = rng.integers(1, num_classes, size=(n, s_max))
  offset = rng.integers(0, num_classes - 1)
  classes[:, -1] = 1 + (np.arange(n) + offset) % (num_classes - 1)
  return paint_shapes(height, width, kind, active, classes, cy, cx, a, b, theta,
                      sides, side_jitter, side_radius)
