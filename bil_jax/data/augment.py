"""Joint geometric augmentation of map/image pairs (Sec. 5.3): flip, crop, rotate.

Every sample of a batch gets its own random affine warp, built from
  * a horizontal flip (probability 1/2, if enabled),
  * a crop: a random window of ``crop_fraction`` of the height and width,
    resized back to ``H x W``,
  * a rotation about the window centre, uniform in ``+-max_rotation_deg``.
The same warp is applied to the segmentation map (nearest neighbour, so class
ids stay valid) and to the image (bilinear).  Source coordinates that fall
outside the image are clamped to the border (edge replication).

Everything is vectorised numpy over the whole batch: one coordinate grid
``[B, H, W]`` and one gather per output, no per-sample Python loop.

``aug_cfg`` is ``cfg.data.augment`` (keys ``flip``, ``crop_fraction``,
``max_rotation_deg``, ``flip_reference``) or ``None`` for no augmentation.
"""
from typing import Any, NamedTuple, Optional, Tuple

import numpy as np


class WarpParams(NamedTuple):
  """Per-sample parameters of the output -> source affine map.

  Attributes:
    flip: bool [B], mirror horizontally.
    scale: float [B], crop window size as a fraction of the image (<= 1).
    center_y: float [B], crop window centre row in pixels (continuous coords).
    center_x: float [B], crop window centre column in pixels.
    angle: float [B], rotation in radians.
  """
  flip: np.ndarray
  scale: np.ndarray
  center_y: np.ndarray
  center_x: np.ndarray
  angle: np.ndarray


def cfg_get(cfg: Any, key: str, default: Any) -> Any:
  """Reads ``key`` from a ConfigDict / dict / None with a default."""
  if cfg is None:
    return default
  if isinstance(cfg, dict) or hasattr(cfg, 'get'):
    return cfg.get(key, default)
  return getattr(cfg, key, default)


def identity_params(n: int, height: int, width: int) -> WarpParams:
  """Warp parameters that leave ``n`` samples unchanged."""
  return WarpParams(flip=np.zeros([n], bool), scale=np.ones([n], np.float32),
                    center_y=np.full([n], height / 2, np.float32),
                    center_x=np.full([n], width / 2, np.float32), angle=np.zeros([n], np.float32))


def random_params(rng: np.random.Generator, n: int, height: int, width: int, aug_cfg: Any,
                  flip: Optional[bool] = None) -> WarpParams:
  """Draws ``n`` random warps.

  Args:
    rng: numpy Generator.
    n: number of samples B.
    height, width: image size H, W.
    aug_cfg: augmentation config or None (-> identity warps).
    flip: overrides ``aug_cfg.flip`` when not None (used for references,
      where the paper can disable the flip, footnote 3).

  Returns:
    WarpParams with [B] arrays.  The random stream consumed does not depend
    on the config values, only on ``n``.
  """
  do_flip = bool(cfg_get(aug_cfg, 'flip', False)) if flip is None else flip
  frac = float(cfg_get(aug_cfg, 'crop_fraction', 1.0))
  if not 0.0 < frac <= 1.0:
    raise ValueError(f'augment.crop_fraction must be in (0, 1], got {frac}')
  max_rot = np.deg2rad(float(cfg_get(aug_cfg, 'max_rotation_deg', 0.0)))
  u = rng.random([4, n]).astype(np.float32)
  flips = (u[0] < 0.5) & do_flip
  margin_y, margin_x = (1.0 - frac) * height, (1.0 - frac) * width
  return WarpParams(flip=flips, scale=np.full([n], frac, np.float32),
                    center_y=(frac * height / 2 + u[1] * margin_y).astype(np.float32),
                    center_x=(frac * width / 2 + u[2] * margin_x).astype(np.float32),
                    angle=((2.0 * u[3] - 1.0) * max_rot).astype(np.float32))


def source_coords(params: WarpParams, height: int, width: int) -> Tuple[np.ndarray, np.ndarray]:
  """Source pixel coordinates of every output pixel.

  Args:
    params: WarpParams with [B] arrays.
    height, width: H, W.

  Returns:
    (ys, xs): float32 [B, H, W] each, in pixel-index units (pixel i has its
    centre at i), not yet clamped.
  """
  # Output pixel centres relative to the image centre, in pixels.
  oy = (np.arange(height, dtype=np.float32) + 0.5) - height / 2
  ox = (np.arange(width, dtype=np.float32) + 0.5) - width / 2
  s = params.scale[:, None, None]
  dy = oy[None, :, None] * s  # [B, H, 1]
  dx = ox[None, None, :] * s  # [B, 1, W]
  cos = np.cos(params.angle)[:, None, None]
  sin = np.sin(params.angle)[:, None, None]
  xs = cos * dx - sin * dy + params.center_x[:, None, None]
  ys = sin * dx + cos * dy + params.center_y[:, None, None]
  xs = np.where(params.flip[:, None, None], width - xs, xs)
  return ys - 0.5, xs - 0.5


def _flat_base(b: int, h: int, w: int) -> np.ndarray:
  """Row offsets of each sample in a [B*H*W] flattening: [B, 1, 1]."""
  return (np.arange(b, dtype=np.intp) * (h * w))[:, None, None]


def warp_nearest(x: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
  """Nearest-neighbour gather with edge clamping.

  Args:
    x: [B, H, W, ...] any dtype.
    ys, xs: float [B, H', W'] source coordinates.

  Returns:
    [B, H', W', ...] with x's dtype.
  """
  b, h, w = x.shape[:3]
  yi = np.clip(np.rint(ys), 0, h - 1).astype(np.intp)
  xi = np.clip(np.rint(xs), 0, w - 1).astype(np.intp)
  flat = x.reshape((b * h * w,) + x.shape[3:])
  return np.take(flat, _flat_base(b, h, w) + yi * w + xi, axis=0)


def warp_bilinear(x: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
  """Bilinear gather with edge clamping.

  Works channel-first internally (1-D gathers and long inner loops are much
  faster in numpy than gathers of 3-vectors).

  Args:
    x: float [B, H, W, C].
    ys, xs: float [B, H', W'] source coordinates.

  Returns:
    float32 [B, H', W', C].
  """
  b, h, w = x.shape[:3]
  ys = np.clip(ys, 0, h - 1).astype(np.float32)
  xs = np.clip(xs, 0, w - 1).astype(np.float32)
  y0 = np.minimum(ys.astype(np.intp), max(h - 2, 0))  # floor, as ys >= 0
  x0 = np.minimum(xs.astype(np.intp), max(w - 2, 0))
  wy = ys - y0.astype(np.float32)  # [B,H',W']
  wx = xs - x0.astype(np.float32)
  dy = int(h > 1) * w  # flat step to the lower neighbour (0 if H == 1)
  dx = int(w > 1)
  chans = np.ascontiguousarray(x.reshape(b * h * w, -1).T, dtype=np.float32)  # [C, B*H*W]
  i00 = _flat_base(b, h, w) + y0 * w + x0
  g = lambda idx: np.take(chans, idx, axis=1)  # [C, B, H', W']
  v00, v01 = g(i00), g(i00 + dx)
  top = v00 + (v01 - v00) * wx
  v10, v11 = g(i00 + dy), g(i00 + dy + dx)
  bot = v10 + (v11 - v10) * wx
  out = top + (bot - top) * wy
  return np.ascontiguousarray(np.moveaxis(out, 0, -1))


def _is_identity(params: WarpParams, height: int, width: int) -> bool:
  return bool(not params.flip.any() and np.all(params.scale == 1.0) and
              np.all(params.angle == 0.0) and np.allclose(params.center_y, height / 2) and
              np.allclose(params.center_x, width / 2))


def apply_warp(params: WarpParams, maps: Optional[np.ndarray], images: Optional[np.ndarray]):
  """Applies the same warps to maps (nearest) and images (bilinear).

  Args:
    params: WarpParams with [B] arrays.
    maps: int [B, H, W] or None.
    images: float [B, H, W, 3] or None.

  Returns:
    (maps, images) warped, same shapes; maps keep their dtype, images become
    float32.  None inputs stay None.
  """
  ref = maps if maps is not None else images
  h, w = ref.shape[1:3]
  if _is_identity(params, h, w):
    return maps, None if images is None else images.astype(np.float32)
  ys, xs = source_coords(params, h, w)
  out_maps = None if maps is None else warp_nearest(maps, ys, xs)
  out_images = None if images is None else warp_bilinear(images, ys, xs)
  return out_maps, out_images


def augment_pairs(maps: np.ndarray, images: np.ndarray, rng: np.random.Generator, aug_cfg: Any):
  """Random joint flip/crop/rotation of map/image pairs.

  Args:
    maps: int [B, H, W] class ids.
    images: float [B, H, W, 3].
    rng: numpy Generator.
    aug_cfg: ``cfg.data.augment`` or None.

  Returns:
    (maps [B, H, W] same dtype, images float32 [B, H, W, 3]), aligned.
  """
  n, h, w = maps.shape
  params = random_params(rng, n, h, w, aug_cfg)
  return apply_warp(params, maps, images)


def augment_reference(images: np.ndarray, rng: np.random.Generator, aug_cfg: Any) -> np.ndarray:
  """Makes PG² reference images from target images.

  Random horizontal flip (controlled by ``aug_cfg.flip_reference`` alone, so
  faces can keep pair flips but unflipped references, footnote 3), random crop
  and random rotation.

  Args:
    images: float [B, H, W, 3].
    rng: numpy Generator.
    aug_cfg: ``cfg.data.augment`` or None (-> references equal the inputs).

  Returns:
    float32 [B, H, W, 3].
  """
  n, h, w = images.shape[:3]
  flip = aug_cfg is not None and bool(cfg_get(aug_cfg, 'flip_reference', True))
  params = random_params(rng, n, h, w, aug_cfg, flip=flip)
  return apply_warp(params, None, images)[1]
