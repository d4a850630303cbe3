"""Facial landmarks (iBUG 68-point order) -> 7-class face segmentation maps.

The paper (Sec. 5.1) builds the FaceForensics segmentation maps from OpenPose
facial landmarks with 7 classes:

  0 background, 1 face, 2 eyebrows, 3 eyes, 4 nose, 5 lips, 6 inner mouth.

Each region is the filled polygon of its landmarks (0-based iBUG indices);
later classes paint over earlier ones:

  face        jaw line 0-16 closed over the eyebrows 26..17 (reversed)
  eyebrows    17-21 and 22-26 (each a 5-point arc, closed by its chord)
  eyes        36-41 and 42-47
  nose        27-35: the convex hull of the bridge 27-30 and the base 31-35
  lips        outer lip contour 48-59
  inner mouth inner lip contour 60-67

Every polygon is also outlined with a line of ``line_width`` pixels (default
min(H, W) / 64, at least 1), so that thin regions (an eyebrow arc, a closed
eye) stay visible at 128x128.

Landmark sources: OpenPose face JSON (``people[i]['face_keypoints_2d']``, 70
points x (x, y, confidence); the first 68 are the iBUG points, 68/69 are the
pupils) and numpy arrays [68, 2] (x, y) or [68, 3] (x, y, confidence).
A landmark set *failed* when it is missing, has a NaN/inf, or has a point of
zero confidence (OpenPose writes (0, 0, 0) for points it did not find).

Coordinates are (x, y) in pixels, x to the right, y down.
"""
import json
from typing import List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image
from PIL import ImageDraw

from bil_jax.data import image_io

NUM_POINTS = 68
FACE_CLASSES = ('background', 'face', 'eyebrows', 'eyes', 'nose', 'lips', 'inner_mouth')
NUM_FACE_CLASSES = len(FACE_CLASSES)

# (class id, polygons as index tuples, take the convex hull); painted in order.
REGIONS: Tuple[Tuple[int, Tuple[Tuple[int, ...], ...], bool], ...] = (
    (1, (tuple(range(0, 17)) + tuple(range(26, 16, -1)),), False),
    (2, (tuple(range(17, 22)), tuple(range(22, 27))), False),
    (3, (tuple(range(36, 42)), tuple(range(42, 48))), False),
    (4, (tuple(range(27, 36)),), True),
    (5, (tuple(range(48, 60)),), False),
    (6, (tuple(range(60, 68)),), False),
)


def convex_hull(points: np.ndarray) -> np.ndarray:
  """Counter-clockwise convex hull (Andrew's monotone chain): [k, 2] of [n, 2]."""
  pts = sorted(set(map(tuple, np.asarray(points, np.float64).tolist())))
  if len(pts) <= 2:
    return np.asarray(pts, np.float64).reshape(-1, 2)

  def cross(o, a, b):
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

  lower, upper = [], []
  for p in pts:
    while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
      lower.pop()
    lower.append(p)
  for p in reversed(pts):
    while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
      upper.pop()
    upper.append(p)
  return np.asarray(lower[:-1] + upper[:-1], np.float64)


def region_polygons(points: np.ndarray) -> List[Tuple[int, np.ndarray]]:
  """The polygons of the 6 foreground regions, in painting order.

  Args:
    points: float [68, 2] (x, y) iBUG landmarks.

  Returns:
    list of (class id, float [k, 2] polygon).
  """
  points = np.asarray(points, np.float64)[:NUM_POINTS, :2]
  out = []
  for cls, polys, hull in REGIONS:
    for idx in polys:
      poly = points[list(idx)]
      out.append((cls, convex_hull(poly) if hull else poly))
  return out


def rasterise(points: np.ndarray, height: int, width: int,
              line_width: Optional[int] = None) -> np.ndarray:
  """Paints the 7-class segmentation map of one face.

  Args:
    points: float [68, 2] (x, y) landmarks in output pixel coordinates (pixel
      centres at integer + 0.5 ... PIL's convention: pixel (i, j) covers
      [j, j+1) x [i, i+1)).
    height, width: H, W of the map.
    line_width: outline width in pixels; None -> max(1, round(min(H, W)/64)).

  Returns:
    uint8 [H, W] class ids in [0, 7).
  """
  if line_width is None:
    line_width = max(1, int(round(min(height, width) / 64)))
  canvas = Image.new('L', (width, height), 0)
  draw = ImageDraw.Draw(canvas)
  for cls, poly in region_polygons(points):
    xy = [(float(x), float(y)) for x, y in poly]
    if len(xy) >= 3:
      draw.polygon(xy, fill=cls)
    if line_width > 0 and len(xy) >= 2:
      draw.line(xy + xy[:1], fill=cls, width=line_width)
  return np.asarray(canvas, np.uint8)


def is_valid(points: Optional[np.ndarray]) -> bool:
  """True for a usable landmark set: float [68, 2] or [68, 3] (x, y, conf).

  Invalid: None, wrong shape, any NaN/inf, any zero confidence, or all points
  at one spot (a detector's empty output).
  """
  if points is None:
    return False
  points = np.asarray(points, np.float64)
  if points.ndim != 2 or points.shape[0] < NUM_POINTS or points.shape[1] < 2:
    return False
  points = points[:NUM_POINTS]
  if not np.all(np.isfinite(points)):
    return False
  if points.shape[1] >= 3 and np.any(points[:, 2] <= 0):
    return False
  return bool(np.ptp(points[:, 0]) > 0 and np.ptp(points[:, 1]) > 0)


def read_openpose_json(path: str) -> Optional[np.ndarray]:
  """Reads an OpenPose ``*_keypoints.json``: float32 [68, 3] or None.

  Returns None (a failed frame) when nobody was detected; with several people
  the one with the highest mean face confidence is taken.  A file that is not
  OpenPose JSON is a DataError.
  """
  try:
    with open(path, 'r', encoding='utf-8') as f:
      data = json.load(f)
  except (OSError, ValueError) as e:
    raise image_io.DataError(path, f'cannot read OpenPose JSON '
                             f'({image_io.first_line(e)})') from None
  if not isinstance(data, dict) or 'people' not in data:
    raise image_io.DataError(path, "not OpenPose JSON: no 'people' list")
  best, best_conf = None, -1.0
  for person in data['people']:
    flat = person.get('face_keypoints_2d') or []
    if not flat:
      continue
    if len(flat) % 3 or len(flat) // 3 < NUM_POINTS:
      raise image_io.DataError(
          path, f"face_keypoints_2d has {len(flat)} numbers; expected 70 x 3 "
          '(x, y, confidence) with the 68 iBUG points first')
    pts = np.asarray(flat, np.float32).reshape(-1, 3)[:NUM_POINTS]
    conf = float(np.nanmean(pts[:, 2]))
    if conf > best_conf:
      best, best_conf = pts, conf
  return best


def read_npy(path: str) -> np.ndarray:
  """Reads a [68, 2] / [68, 3] landmark array (a DataError if malformed)."""
  try:
    arr = np.load(path, allow_pickle=False)
  except (OSError, ValueError) as e:
    raise image_io.DataError(path, f'cannot read landmarks '
                             f'({image_io.first_line(e)})') from None
  if arr.ndim != 2 or arr.shape[0] < NUM_POINTS or arr.shape[1] not in (2, 3):
    raise image_io.DataError(
        path, f'landmarks have shape {arr.shape}; '
        'expected [68, 2] (x, y) or [68, 3] (x, y, conf)')
  return arr.astype(np.float32)


def bounding_box(points: np.ndarray, margin: float, scale: float = 1.0,
                 shift: Sequence[float] = (0.0, 0.0)) -> Tuple[int, int, int]:
  """Square crop box around the landmarks' bounding box.

  The side is (1 + 2 margin) * max(box width, box height) * scale; the box is
  centred on the landmarks' box centre moved by ``shift`` (fractions of the
  side, x then y).

  Returns:
    (left, top, side) integers.
  """
  pts = np.asarray(points, np.float64)[:NUM_POINTS, :2]
  lo, hi = pts.min(0), pts.max(0)
  side = max(2.0, (1 + 2 * margin) * float(np.max(hi - lo)) * scale)
  cx = (lo[0] + hi[0]) / 2 + shift[0] * side
  cy = (lo[1] + hi[1]) / 2 + shift[1] * side
  s = int(round(side))
  return int(round(cx - s / 2)), int(round(cy - s / 2)), s


def crop_face(image: np.ndarray, points: np.ndarray, box: Tuple[int, int, int], height: int,
              width: int) -> Tuple[np.ndarray, np.ndarray]:
  """Crops the square ``box`` (zero padding outside the frame) and resizes.

  Args:
    image: uint8 [h, w, 3] frame.
    points: float [68, >=2] landmarks in frame pixels.
    box: (left, top, side) from :func:`bounding_box`.
    height, width: output size.

  Returns:
    (uint8 [height, width, 3] crop, float [68, 2] landmarks in crop pixels).
  """
  left, top, side = box
  crop = Image.fromarray(image).crop((left, top, left + side, top + side))
  crop = crop.resize((width, height), Image.BILINEAR)
  pts = np.asarray(points, np.float64)[:NUM_POINTS, :2] - (left, top)
  pts = pts * (width / side, height / side)
  return np.asarray(crop, np.uint8), pts


def template(size: float = 1.0) -> np.ndarray:
  """A frontal face in iBUG order inside the square [0, size]^2: [68, 2].

  Used to make fixtures and in tests; every region polygon is simple and
  non-degenerate.
  """

  def arc(cx, cy, a, b, t0, t1, n):
    t = np.linspace(t0, t1, n)
    return np.stack([cx + a * np.cos(t), cy + b * np.sin(t)], -1)

  jaw = arc(0.5, 0.45, 0.40, 0.45, np.pi, 0.0, 17)  # 0-16, via chin
  brow_l = arc(0.32, 0.33, 0.12, 0.05, np.pi, 2 * np.pi, 5)  # 17-21
  brow_r = arc(0.68, 0.33, 0.12, 0.05, np.pi, 2 * np.pi, 5)  # 22-26
  bridge = np.stack([np.full(4, 0.5), np.linspace(0.42, 0.60, 4)], -1)
  base = arc(0.5, 0.62, 0.08, 0.03, np.pi, 0.0, 5)  # 31-35
  eye = lambda cx: np.array([[cx - 0.08, 0.45], [cx - 0.03, 0.42], [cx + 0.03, 0.42],
                             [cx + 0.08, 0.45], [cx + 0.03, 0.48], [cx - 0.03, 0.48]])
  outer = arc(0.5, 0.76, 0.14, 0.07, np.pi, 3 * np.pi, 13)[:-1]  # 48-59
  inner = arc(0.5, 0.76, 0.08, 0.025, np.pi, 3 * np.pi, 9)[:-1]  # 60-67
  # iBUG lips run from the left corner along the TOP lip: y decreasing first.
  outer[:, 1] = 2 * 0.76 - outer[:, 1]
  inner[:, 1] = 2 * 0.76 - inner[:, 1]
  pts = np.concatenate([jaw, brow_l, brow_r, bridge, base, eye(0.32), eye(0.68), outer, inner])
  assert pts.shape == (NUM_POINTS, 2)
  return pts * size
