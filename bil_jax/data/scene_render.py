"""Synthetic-scene appearance (colours, textures, lighting) and rendering.

A scene's look is hidden from its maps: per-class base and texture colours, and
texture frequency, orientation, phase and contrast.  Texture and shading are
anchored to the objects (computed in each object's own frame, see
:func:`bil_jax.data.scene_layouts.paint`) and the background's texture to the
world, so they move with the objects and the camera.  Every frame has its own
light: a direction and strength around the scene's, and an overall gain.  Shared
by all scenes: the texture kind of a class (id % 3: stripes, checks, rings around
the object's centre), each object's dome-like shading under the frame's light,
dark 1-pixel outlines and a bevel along class boundaries, and mild pixel noise.
"""
from typing import Any, Dict, Optional, Tuple

import numpy as np

from bil_jax.data import scene_layouts

BEVEL_PX = 3
# Per-frame light, per unit of data.motion: std of the direction's drift over the clip
# and of its frame-to-frame jitter (radians), of the log strength and of the log gain.
LIGHT_DRIFT, LIGHT_JITTER, LIGHT_STRENGTH, LIGHT_GAIN = 0.9, 0.15, 0.3, 0.1
LIGHT_ELEVATION = np.pi / 4
f32 = scene_layouts.f32


def hsv_to_rgb(h, s, v):
  """Vectorised HSV -> RGB, all in [0, 1]; returns [..., 3]."""
  h6 = (h % 1.0) * 6.0
  k = np.stack([(5 + h6) % 6, (3 + h6) % 6, (1 + h6) % 6], -1)
  return v[..., None] - (v * s)[..., None] * np.clip(np.minimum(k, 4 - k), 0, 1)


def class_priors(seed: int, num_classes: int) -> Dict[str, np.ndarray]:
  """The dataset-wide typical look of each class (like "sky is bluish"): [C] each.

  Shared by the train and test scenes of one seed; every scene perturbs it, so a
  conventional model can learn the prior while the shots reveal a scene's own look.
  """
  rng = np.random.default_rng(np.random.SeedSequence([int(seed), 7919]))
  return {
      'hue': rng.random(num_classes), 'sat': 0.35 + 0.55 * rng.random(num_classes),
      'val': 0.4 + 0.5 * rng.random(num_classes)
  }


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


def class_colours(hue, sat, val, tex_dhue, tex_sat, tex_val) -> Tuple[np.ndarray, np.ndarray]:
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
    'freq', 'angle', 'phase', 'contrast' [C]; 'light_angle', 'light_strength'
    scalars.
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
      'freq': f32(rng.uniform(1.0, 3.5, c)),
      'angle': f32(rng.uniform(0, np.pi, c)),
      'phase': f32(rng.uniform(0, 2 * np.pi, c)),
      'contrast': f32(rng.uniform(0.5, 1.0, c)),
      'light_angle': f32(rng.uniform(0, 2 * np.pi)),
      'light_strength': f32(rng.uniform(0.3, 0.6)),
  }


def sample_lighting(rng: np.random.Generator, look: Dict[str, Any], t: np.ndarray,
                    amount: float) -> Dict[str, np.ndarray]:
  """Each frame's light around the scene's: 'angle', 'strength', 'gain', each [n].

  The direction drifts linearly over the clip (frame times ``t`` [n]) and jitters
  per frame; strength and gain vary per frame; ``amount`` scales every change.
  """
  n = t.shape[0]
  angle = (look['light_angle'] + t * rng.normal(0, LIGHT_DRIFT * amount)
           + rng.normal(0, LIGHT_JITTER * amount, n))
  strength = look['light_strength'] * np.exp(rng.normal(0, LIGHT_STRENGTH * amount, n))
  gain = np.exp(rng.normal(0, LIGHT_GAIN * amount, n))
  return {'angle': f32(angle), 'strength': f32(np.clip(strength, 0, 0.8)), 'gain': f32(gain)}


def texture_fields(look: Dict[str, Any], frame: Dict[str, Any]) -> np.ndarray:
  """Texture intensity in [0, 1] of every pixel: float32 [n, H, W].

  An object's pixel uses its class's texture in the object's frame (u, v); a
  background pixel uses the background class's texture in world coordinates.  The
  kind is shared by all scenes (class id % 3: stripes, checks, rings around the
  object's centre); frequency, orientation and phase are the scene's.
  """
  maps = frame['maps'].astype(np.intp)
  on = frame['top'] >= 0
  ext_y, ext_x = scene_layouts.extent(*maps.shape[1:])
  u = np.where(on, frame['u'], frame['wx'] - ext_x / 2)
  v = np.where(on, frame['v'], frame['wy'] - ext_y / 2)
  w = 2 * np.pi * look['freq'][maps]
  cos, sin = np.cos(look['angle'])[maps], np.sin(look['angle'])[maps]
  phase = look['phase'][maps]
  su = np.sin(w * (cos * u + sin * v) + phase)
  stripes = 0.5 + 0.5 * su
  checks = 0.5 + 0.5 * np.tanh(4 * su * np.sin(w * (cos * v - sin * u)))
  rings = 0.5 + 0.5 * np.sin(w * np.sqrt(u * u + v * v) + phase)
  kind = maps % 3
  return np.select([kind == 0, kind == 1], [stripes, checks], rings).astype(np.float32)


def shading(frame: Dict[str, Any], light: Dict[str, np.ndarray], height: int,
            width: int) -> np.ndarray:
  """Light on every pixel: float32 [n, H, W], about 1 on average.

  An object is lit as a dome over its shape (normal from its normalised frame
  coordinates, turned with the object) under the frame's light direction at 45
  degrees elevation; the background gets a linear gradient along the direction.
  """
  e = lambda x: x[:, None, None]
  nu, nv, ang = frame['nu'], frame['nv'], frame['angle']
  h = np.sqrt(np.clip(1.0 - nu * nu - nv * nv, 0.05, 1.0))
  nx = nu * np.cos(ang) - nv * np.sin(ang)
  ny = nu * np.sin(ang) + nv * np.cos(ang)
  ce, se = np.cos(LIGHT_ELEVATION), np.sin(LIGHT_ELEVATION)
  lx, ly = e(np.cos(light['angle'])) * ce, e(np.sin(light['angle'])) * ce
  diffuse = np.maximum(0.0, (nx * lx + ny * ly + h * se) / np.sqrt(nx * nx + ny * ny + h * h))
  s = e(light['strength'])
  dome = 1.0 - s + s * diffuse / se
  ext_y, ext_x = scene_layouts.extent(height, width)
  proj = (lx * (frame['wx'] - ext_x / 2) + ly * (frame['wy'] - ext_y / 2)) / ce
  flat = 1.0 + s * proj / (0.5 * max(ext_x, ext_y))
  return np.where(frame['top'] >= 0, dome, flat).astype(np.float32)


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


def render(frame: Dict[str, Any], look: Dict[str, Any], light: Dict[str, np.ndarray],
           rng: np.random.Generator) -> np.ndarray:
  """Renders the frames of a clip with a scene's look.

  Args:
    frame: output of :func:`bil_jax.data.scene_layouts.paint` (maps [n, H, W]).
    look: output of sample_appearance for C classes.
    light: output of :func:`sample_lighting` for the n frames.
    rng: numpy Generator for the pixel noise.

  Returns:
    uint8 [n, H, W, 3].
  """
  maps = frame['maps']
  n, height, width = maps.shape
  tex = texture_fields(look, frame) * look['contrast'][maps]
  base = look['base'][maps]
  img = base + (look['tex'][maps] - base) * tex[..., None]
  d = boundary_distance(maps)
  bevel = np.where(d == 0, 0.4, 0.8 + 0.2 * d / BEVEL_PX).astype(np.float32)
  light_map = shading(frame, light, height, width) * bevel * light['gain'][:, None, None]
  img = img * light_map[..., None]
  # Uniform noise with standard deviation 0.02 (cheaper than Gaussian).
  img += np.float32(
      0.02 * np.sqrt(12.0)) * (rng.random(img.shape, dtype=np.float32) - np.float32(0.5))
  return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
