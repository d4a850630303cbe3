"""Synthetic-scene geometry: objects, their motion over a clip, and rasterisation.

A scene is a set of S objects over background (class 0): rotated rectangles,
ellipses, convex polygons and stripes (infinite bands), each with a class in
1..C-1, painted in order so that later objects occlude earlier ones.  The pairs of
a scene are frames of one clip: frame k is taken at time t_k in [-1/2, 1/2], every
object moves, rotates and scales along its own smooth path, and the camera shifts
and zooms.  Coordinates are in units of the image's shorter side.

:func:`paint` returns, besides the maps, each pixel's coordinates in the frame of
the object that covers it (and the world coordinates of the background), so that
texture and shading are anchored to the objects, never to the image.
"""
from typing import Any, Dict, Tuple

import numpy as np

MAX_OBJECTS = 8
MIN_OBJECTS = 3
SHAPE_KIND_PROBS = (0.3, 0.3, 0.25, 0.15)  # rectangle, ellipse, polygon, stripe
# Motion per unit of data.motion, over the whole clip (t from -1/2 to 1/2): the std of
# an object's displacement (image sides), rotation (radians) and log scale, and of the
# camera's shift (image sides) and log zoom.
OBJECT_SHIFT, OBJECT_TURN, OBJECT_GROW = 0.9, 2.4, 0.9
CAMERA_SHIFT, CAMERA_ZOOM = 0.9, 0.75
WOBBLE = 0.09  # amplitude of an object's wobble around its drift (image sides)


def f32(x) -> np.ndarray:
  """x as a float32 array."""
  return np.asarray(x, np.float32)


def pixel_grid(height: int, width: int) -> Tuple[np.ndarray, np.ndarray]:
  """Pixel-centre coordinates in units of the shorter side: [H,1], [1,W]."""
  m = float(min(height, width))
  ys = ((np.arange(height, dtype=np.float32) + 0.5) / m)[:, None]
  xs = ((np.arange(width, dtype=np.float32) + 0.5) / m)[None, :]
  return ys, xs


def extent(height: int, width: int) -> Tuple[float, float]:
  """The image's (height, width) in units of the shorter side."""
  return height / min(height, width), width / min(height, width)


def sample_objects(rng: np.random.Generator, num_classes: int, height: int,
                   width: int) -> Dict[str, np.ndarray]:
  """A scene's objects at time 0, independent of any family.

  Returns:
    dict of [S] arrays ('side_jitter', 'side_radius': [S, 6]), S in [3, 8]:
    'cls' uint8 in [1, C), 'kind' (see :func:`rasterise`), centre 'cy', 'cx', half
    sizes 'a', 'b', angle 'theta', polygon 'sides' and side parameters.  The
    classes are distinct while S < C (a scene shows min(S, C - 1) classes).
  """
  if num_classes < 2:
    raise ValueError(f'synthetic scenes need num_classes >= 2, got {num_classes}')
  s = int(rng.integers(MIN_OBJECTS, MAX_OBJECTS + 1))
  ext_y, ext_x = extent(height, width)
  a = np.exp(rng.uniform(np.log(0.08), np.log(0.35), s))
  return {
      'cls': (1 + np.resize(rng.permutation(num_classes - 1), s)).astype(np.uint8),
      'kind': rng.choice(4, size=s, p=list(SHAPE_KIND_PROBS)),
      'cy': f32(rng.uniform(0.1, 0.9, s) * ext_y),
      'cx': f32(rng.uniform(0.1, 0.9, s) * ext_x),
      'a': f32(a),
      'b': f32(a * rng.uniform(0.35, 1.25, s)),
      'theta': f32(rng.uniform(0, np.pi, s)),
      'sides': rng.integers(3, 7, size=s),
      'side_jitter': f32((rng.random((s, 6)) - 0.5) * 0.6),
      'side_radius': f32(0.6 + 0.4 * rng.random((s, 6))),
  }


def sample_motion(rng: np.random.Generator, n: int, num_objects: int,
                  amount: float) -> Dict[str, np.ndarray]:
  """Per-frame poses of a clip of n frames with S objects.

  Each object drifts at a constant velocity plus a small wobble, turns and grows at a
  constant rate; the camera shifts and zooms likewise.  ``amount`` scales every
  motion (0: all frames alike).

  Returns:
    dict: 't' [n] frame times; per object 'dy', 'dx', 'turn', 'grow' [n, S] (offsets
    from the time-0 pose; 'grow' is a log scale); camera 'cam_dy', 'cam_dx',
    'cam_zoom' (log) [n].
  """
  t = rng.uniform(-0.5, 0.5, n)[:, None]
  s = num_objects
  drift = lambda std, size: t * rng.normal(0, std * amount, size)[None]
  wobble_f = rng.uniform(1.0, 3.0, (2, s))
  wobble_p = rng.uniform(0, 2 * np.pi, (2, s))
  wobble = WOBBLE * amount * np.sin(2 * np.pi * wobble_f[:, None] * t[None] + wobble_p[:, None])
  cam = lambda std: (t[:, 0] * rng.normal(0, std * amount))
  return {
      't': f32(t[:, 0]),
      'dy': f32(drift(OBJECT_SHIFT, s) + wobble[0]),
      'dx': f32(drift(OBJECT_SHIFT, s) + wobble[1]),
      'turn': f32(drift(OBJECT_TURN, s)),
      'grow': f32(drift(OBJECT_GROW, s)),
      'cam_dy': f32(cam(CAMERA_SHIFT)),
      'cam_dx': f32(cam(CAMERA_SHIFT)),
      'cam_zoom': f32(cam(CAMERA_ZOOM)),
  }


def _kind_masks(kind: int, u, v, a, b, sides, side_jitter, side_radius) -> np.ndarray:
  """Masks of k shapes of one kind: bool [n, k, H, W] (see :func:`rasterise`)."""
  e = lambda x: x[None, :, None, None]
  if kind == 0:
    return (np.abs(u) < e(a)) & (np.abs(v) < e(b))
  if kind == 1:
    return (u / e(a)) ** 2 + (v / e(b)) ** 2 < 1.0
  if kind == 3:
    return np.abs(v) < 0.5 * e(b)
  poly = np.ones(u.shape, bool)
  step = 2 * np.pi / sides
  for j in range(int(sides.max())):
    phi = step * (j + side_jitter[:, j])
    half = e(np.cos(phi)) * u + e(np.sin(phi)) * v < e(a * side_radius[:, j])
    poly &= half | e(j >= sides)
  return poly


def rasterise(kind, u, v, a, b, sides, side_jitter, side_radius) -> np.ndarray:
  """Masks of shapes given pixel coordinates in each shape's own frame.

  Args:
    kind: int [S]: 0 rectangle, 1 ellipse, 2 convex polygon (3-6 half-planes),
      3 stripe (a band along the shape's u axis).
    u, v: float [n, S, H, W] coordinates in the shape's frame.
    a, b, sides: [S] half sizes and polygon side counts.
    side_jitter, side_radius: [S, 6] polygon side angles and distances.

  Returns:
    bool [n, S, H, W].
  """
  masks = np.zeros(u.shape, bool)
  for k in range(4):
    sel = np.nonzero(kind == k)[0]
    if sel.size:
      masks[:, sel] = _kind_masks(k, u[:, sel], v[:, sel], a[sel], b[sel], sides[sel],
                                  side_jitter[sel], side_radius[sel])
  return masks


def _local(wy, wx, cy, cx, theta, scale):
  """Coordinates (u, v) in the frame of an object at (cy, cx), turned by theta and
  scaled by scale; all arguments broadcast."""
  dy, dx = wy - cy, wx - cx
  cos, sin = np.cos(theta), np.sin(theta)
  return (cos * dx + sin * dy) / scale, (cos * dy - sin * dx) / scale


def paint(objects: Dict[str, np.ndarray], motion: Dict[str, np.ndarray], height: int,
          width: int) -> Dict[str, Any]:
  """Rasterises every frame of a clip.

  Returns:
    dict with 'maps' uint8 [n, H, W] class ids; 'top' int [n, H, W] the index of the
    object covering each pixel (-1: background); 'u', 'v' float32 [n, H, W] the
    pixel's coordinates in that object's frame, divided by its scale (0 on the
    background); 'nu', 'nv' the same divided by the object's half sizes (about -1..1
    across it; a stripe's nu is 0); 'angle' float32 [n, H, W] that object's current
    angle; 'wy', 'wx' float32 [n, H, W] world coordinates (the camera undone).
  """
  ys, xs = pixel_grid(height, width)
  ext_y, ext_x = extent(height, width)
  e = lambda x: x[:, None, None]
  zoom = np.exp(motion['cam_zoom'])
  wy = (ys[None] - ext_y / 2 - e(motion['cam_dy'])) / e(zoom) + ext_y / 2  # [n,H,1]
  wx = (xs[None] - ext_x / 2 - e(motion['cam_dx'])) / e(zoom) + ext_x / 2  # [n,1,W]
  pose = {
      'cy': objects['cy'][None] + motion['dy'], 'cx': objects['cx'][None] + motion['dx'],
      'theta': objects['theta'][None] + motion['turn'], 'scale': np.exp(motion['grow'])
  }  # [n, S] each
  g = lambda x: x[:, :, None, None]  # [n, S] -> [n, S, 1, 1]
  u, v = _local(wy[:, None], wx[:, None], g(pose['cy']), g(pose['cx']), g(pose['theta']),
                g(pose['scale']))
  masks = rasterise(objects['kind'], u, v, objects['a'], objects['b'], objects['sides'],
                    objects['side_jitter'], objects['side_radius'])
  n, s = masks.shape[:2]
  top = np.full((n, height, width), -1, np.int64)
  for j in range(s):  # later objects occlude earlier ones
    top = np.where(masks[:, j], j, top)
  # Each pixel's own object: its pose and shape, then its coordinates in its frame.
  j, on = np.maximum(top, 0), top >= 0
  at = {k: x[np.arange(n)[:, None, None], j] for k, x in pose.items()}  # [n, H, W]
  wy, wx = np.broadcast_arrays(wy, wx)
  u, v = _local(wy, wx, at['cy'], at['cx'], at['theta'], at['scale'])
  kind, a, b = objects['kind'][j], objects['a'][j], objects['b'][j]
  nu = np.where(kind == 3, 0.0, u / a)
  nv = v / np.select([kind == 3, kind == 2], [0.5 * b, a], b)
  zero = lambda x: np.where(on, x, 0).astype(np.float32)
  cls = np.concatenate([[0], objects['cls']]).astype(np.uint8)
  return {
      'maps': cls[top + 1], 'top': top, 'u': zero(u), 'v': zero(v), 'nu': zero(nu), 'nv': zero(nv),
      'angle': zero(at['theta']), 'wy': f32(wy), 'wx': f32(wx)
  }
