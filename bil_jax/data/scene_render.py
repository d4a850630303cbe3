"""Synthetic-scene appearance (colours, textures, lighting) and rendering.

A scene's appearance is hidden from its maps: per-class base and texture
colours, texture frequency, orientation, phase and contrast, and a lighting
gradient.  Shared by all scenes: the texture kind of a class (id % 3:
stripes, checks, rings), dark 1-pixel outlines and a bevel along class
boundaries, and mild pixel noise.
"""
from typing import Any, Dict, Optional, Tuple

import numpy as np

from bil_jax.data import scene_layouts

BEVEL_PX = 3


def hsv_to_rgb(h, s, v):
  """Vectorised HSV -> RGB, all in [0, 1]; returns [..., 3]."""
  h6 = (h % 1.0) * 6.0
  k = np.stack([(5 + h6) % 6, (3 + h6) % 6, (1 + h6) % 6], -1)
  return v[..., None] - (v * s)[..., None] * np.clip(
      np.minimum(k, 4 - k), 0, 1)


def f32(x) -> np.ndarray:
  """x as a float32 array."""
  return np.asarray(x, np.float32)


def class_priors(seed: int, num_classes: int) -> Dict[str, np.ndarray]:
  """The dataset-wide typical look of each class (like "sky is bluish"): [C] each.

  Shared by the train and test scenes of one seed; every scene perturbs it, so a
  conventional model can learn the prior while the shots reveal a scene's own look.
  """
  rng = np.random.default_rng(np.random.SeedSequence([int(seed), 7919]))
  return {'hue': rng.random(num_classes),
          'sat': 0.35 + 0.55 * rng.random(num_classes),
          'val': 0.4 + 0.5 * rng.random(num_classes)}


def perturb_hsv(rng: np.random.Generator, look: Dict[str, np.ndarray],
                hue_shift: float) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Per-class (hue, sat, val), each [C], around ``look``'s.

  Hue shifted by U(-hue_shift, hue_shift), saturation scaled by U(0.6, 1.4)
  and clipped to [0.1, 1], value scaled by U(0.7, 1.3) and clipped to [0.2, 1]
  (drawn in that order).
  """
  c = look['hue'].shape[0]
  hue = look['hue'] + rng.uniform(-hue_shift, hue_shift, c)
  sat = np.clip(look['sat'] * rng.uniform(0.6, 1.4, c), 0.1, 1.0)
  val = np.clip(look['val'] * rng.uniform(0.7, 1.3, c), 0.2, 1.0)
  return hue, sat, val


def class_colours(hue, sat, val, tex_dhue, tex_sat, tex_val
                  ) -> Tuple[np.ndarray, np.ndarray]:
  """(base, texture) RGB colours [C, 3] from per-class HSV and texture offsets [C].

  The texture colour has hue + tex_dhue, saturation sat * tex_sat (clipped to
  [0, 1]) and value val * tex_val.
  """
  base = hsv_to_rgb(hue, sat, val)
  tex = hsv_to_rgb(hue + tex_dhue, np.clip(sat * tex_sat, 0, 1), val * tex_val)
  return base, tex


def sample_appearance(rng: np.random.Generator, num_classes: int,
                      priors: Optional[Dict[str, np.ndarray]] = None,
                      hue_jitter: float = 0.15) -> Dict[str, Any]:
  """Draws one scene's appearance (hidden from the maps).

  With ``priors`` (see :func:`class_priors`) each class's colour is the prior with a
  scene-specific hue shift of up to +-``hue_jitter`` and scaled saturation and value;
  without, colours are uniform over the hue circle.

  Returns:
    dict of float32 arrays: 'base' [C,3] and 'tex' [C,3] RGB colours in [0,1];
    'freq', 'angle', 'phase', 'contrast' [C]; 'ring_center' [C,2];
    'light_angle', 'light_strength' scalars.
  """
  c = num_classes
  if priors is None:
    hue = rng.random(c)
    sat = 0.25 + 0.75 * rng.random(c)
    val = 0.35 + 0.6 * rng.random(c)
  else:
    hue, sat, val = perturb_hsv(rng, priors, hue_jitter)
  tex_dhue = rng.uniform(-0.3, 0.3, c)
  tex_sat = rng.uniform(0.5, 1.3, c)
  tex_val = rng.uniform(0.35, 0.8, c)
  base, tex = class_colours(hue, sat, val, tex_dhue, tex_sat, tex_val)
  return {
      'base': f32(base),
      'tex': f32(tex),
      'freq': f32(rng.uniform(2.0, 6.0, c)),
      'angle': f32(rng.uniform(0, np.pi, c)),
      'phase': f32(rng.uniform(0, 2 * np.pi, c)),
      'contrast': f32(rng.uniform(0.25, 0.9, c)),
      'ring_center': f32(rng.uniform(0, 1, (c, 2))),
      'light_angle': f32(rng.uniform(0, 2 * np.pi)),
      'light_strength': f32(rng.uniform(0.15, 0.45)),
  }


def texture_fields(app: Dict[str, Any], height: int,
                   width: int) -> np.ndarray:
  """Per-class texture intensity in [0, 1] over the image: float32 [C, H, W].

  The texture kind is shared by all scenes (class id % 3: stripes, checks,
  rings); frequency, orientation, phase are the scene's.
  """
  ys, xs = scene_layouts.pixel_grid(height, width)
  c = app['freq'].shape[0]
  e = lambda v: v[:, None, None]
  w = 2 * np.pi * e(app['freq'])
  u = e(np.cos(app['angle'])) * xs + e(np.sin(app['angle'])) * ys
  v = e(np.cos(app['angle'])) * ys - e(np.sin(app['angle'])) * xs
  stripes = 0.5 + 0.5 * np.sin(w * u + e(app['phase']))
  checks = 0.5 + 0.5 * np.tanh(4 * np.sin(w * u + e(app['phase'])) *
                               np.sin(w * v))
  r = np.sqrt((ys - e(app['ring_center'][:, 0])) ** 2 +
              (xs - e(app['ring_center'][:, 1])) ** 2)
  rings = 0.5 + 0.5 * np.sin(w * r + e(app['phase']))
  kind = e(np.arange(c) % 3)
  return np.select([kind == 0, kind == 1], [stripes, checks],
                   rings).astype(np.float32)


def boundary_distance(maps: np.ndarray, cap: int = BEVEL_PX) -> np.ndarray:
  """Chessboard distance (in pixels, capped) to the nearest class boundary.

  A boundary pixel is one with a 4-neighbour of a smaller class id, so an
  outline is one pixel wide and lies on the upper (later painted) class.

  Args:
    maps: int [n, H, W].
    cap: maximum distance returned.

  Returns:
    int32 [n, H, W] in [0, cap]; 0 on boundaries.
  """
  m = maps.astype(np.int16)
  edge = np.zeros(m.shape, bool)
  edge[:, 1:] |= m[:, 1:] > m[:, :-1]
  edge[:, :-1] |= m[:, :-1] > m[:, 1:]
  edge[:, :, 1:] |= m[:, :, 1:] > m[:, :, :-1]
  edge[:, :, :-1] |= m[:, :, :-1] > m[:, :, 1:]
  dist = np.zeros(m.shape, np.int32)
  cover = edge
  for _ in range(cap):
    dist += ~cover
    grown = cover.copy()
    grown[:, 1:] |= cover[:, :-1]
    grown[:, :-1] |= cover[:, 1:]
    g2 = grown.copy()
    g2[:, :, 1:] |= grown[:, :, :-1]
    g2[:, :, :-1] |= grown[:, :, 1:]
    cover = g2
  return dist


def render(maps: np.ndarray, app: Dict[str, Any],
           rng: np.random.Generator) -> np.ndarray:
  """Renders maps with a scene appearance.

  Args:
    maps: uint8 [n, H, W] class ids < C.
    app: output of sample_appearance for C classes.
    rng: numpy Generator for the pixel noise.

  Returns:
    uint8 [n, H, W, 3].
  """
  n, height, width = maps.shape
  ys, xs = scene_layouts.pixel_grid(height, width)
  tex = texture_fields(app, height, width) * app['contrast'][:, None, None]
  base, tcol = app['base'][:, None, None], app['tex'][:, None, None]
  fields = base + (tcol - base) * tex[..., None]  # [C,H,W,3] per-class colours
  pix = np.arange(height * width).reshape(height, width)
  img = fields.reshape(-1, 3)[maps.astype(np.intp) * (height * width) + pix]
  # Scene lighting: a smooth linear gradient in the scene's direction.
  ext_y, ext_x = scene_layouts.extent(height, width)
  proj = (np.cos(app['light_angle']) * (xs - ext_x / 2) +
          np.sin(app['light_angle']) * (ys - ext_y / 2))
  light = 1.0 + app['light_strength'] * proj / (0.5 * max(ext_x, ext_y))
  # Shared structure: outlines and a bevel near class boundaries.
  d = boundary_distance(maps)
  bevel = np.where(d == 0, 0.4, 0.8 + 0.2 * d / BEVEL_PX).astype(np.float32)
  img *= (light.astype(np.float32)[None] * bevel)[..., None]
  # Uniform noise with standard deviation 0.02 (cheaper than Gaussian).
  img += np.float32(0.02 * np.sqrt(12.0)) * (
      rng.random(img.shape, dtype=np.float32) - np.float32(0.5))
  return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
