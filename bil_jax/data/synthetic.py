"""Synthetic scenes: a locally generated, download-free few-shot I2I dataset.

Each task is a *scene*: many segmentation-map / image pairs that share one
appearance.  The map of a pair is a random layout of the C classes (class 0
background, then 3-8 occluding shapes of classes 1..C-1: rotated rectangles,
ellipses, convex polygons and stripes of varied size).  The image renders the
map with the scene's appearance, which the map does NOT reveal:

* scene-specific (never shared):
  - a colour palette: two colours per class (a base and a texture colour),
    drawn in HSV with uniform hue, so the mean image over scenes is far from
    any scene;
  - per-class texture frequency, orientation, phase and contrast;
  - a lighting direction and strength (a smooth linear shading gradient).
* shared by ALL scenes (what a general-purpose model can learn):
  - the texture *kind* of a class (id % 3: stripes, checks, rings);
  - dark 1-pixel outlines along class boundaries and a bevel that darkens
    pixels within 3 pixels of a boundary;
  - mild pixel noise (uniform, standard deviation 0.02).

So a model needs the n support pairs of a scene to get its colours, textures
and lighting right, while edges, bevel and texture kinds transfer across
scenes.  Textures are anchored to image coordinates, so they are consistent
across the pairs of a scene.

Everything is vectorised numpy; one task of 30 pairs at 32x32 renders in about
a millisecond.  Generation is deterministic from (seed, split, task index);
train and test tasks use different seed streams and names ('train_00000',
'test_00000'), so they are disjoint.

The TFDS builder ``SyntheticScenes`` stores one task per example with
:func:`bil_jax.data.tasks.TASK_FEATURES`; its BuilderConfig name encodes all
generation parameters, so different settings cache separately in data_dir.
It is registered in the dataset registry as 'synthetic'.
"""
import dataclasses
import inspect
import os
from typing import Any, Dict, Optional, Tuple

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from bil_jax.data import registry
from bil_jax.data import tasks as tasks_lib

_SPLIT_CODE = {'train': 0, 'test': 1}
_MAX_SHAPES = 8
_MIN_SHAPES = 3
_BEVEL_PX = 3


# ---------------------------------------------------------------------------
# Layouts (segmentation maps)
# ---------------------------------------------------------------------------


def _grid(height: int, width: int) -> Tuple[np.ndarray, np.ndarray]:
  """Pixel-centre coordinates in units of the shorter side: [H,1], [1,W]."""
  m = float(min(height, width))
  ys = ((np.arange(height, dtype=np.float32) + 0.5) / m)[:, None]
  xs = ((np.arange(width, dtype=np.float32) + 0.5) / m)[None, :]
  return ys, xs


def _rasterise(kind: int, ys, xs, cy, cx, a, b, theta, sides, side_jitter,
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
  s_max = _MAX_SHAPES
  ys, xs = _grid(height, width)
  ext_y, ext_x = height / min(height, width), width / min(height, width)

  def u(*shape):
    return rng.random((n, s_max) + shape, dtype=np.float32)

  kind = rng.choice(4, size=(n, s_max), p=[0.3, 0.3, 0.25, 0.15])
  cy = u() * ext_y
  cx = u() * ext_x
  a = np.exp(np.log(0.07) + u() * np.log(0.40 / 0.07))  # half sizes
  b = a * (0.35 + 0.9 * u())
  theta = u() * np.float32(np.pi)
  sides = rng.integers(3, 7, size=(n, s_max))
  side_jitter = (u(6) - 0.5) * 0.6
  side_radius = 0.6 + 0.4 * u(6)
  num_active = rng.integers(_MIN_SHAPES, s_max + 1, size=(n, 1))
  active = np.arange(s_max)[None, :] >= s_max - num_active  # top ones active
  classes = rng.integers(1, num_classes, size=(n, s_max))
  offset = rng.integers(0, num_classes - 1)
  classes[:, -1] = 1 + (np.arange(n) + offset) % (num_classes - 1)

  # Rasterise each shape kind only for the shapes of that kind: [k, H, W].
  masks = np.zeros((n, s_max, height, width), bool)
  for k in range(4):
    idx = np.nonzero((kind == k) & active)
    if idx[0].size:
      masks[idx] = _rasterise(
          k, ys, xs, cy[idx], cx[idx], a[idx], b[idx], theta[idx],
          sides[idx], side_jitter[idx], side_radius[idx])

  maps = np.zeros((n, height, width), np.uint8)
  for s in range(s_max):  # later shapes occlude earlier ones
    maps = np.where(masks[:, s], classes[:, s, None, None].astype(np.uint8),
                    maps)
  return maps


# ---------------------------------------------------------------------------
# Appearance (per scene) and rendering
# ---------------------------------------------------------------------------


def _hsv_to_rgb(h, s, v):
  """Vectorised HSV -> RGB, all in [0, 1]; returns [..., 3]."""
  h6 = (h % 1.0) * 6.0
  k = np.stack([(5 + h6) % 6, (3 + h6) % 6, (1 + h6) % 6], -1)
  return v[..., None] - (v * s)[..., None] * np.clip(
      np.minimum(k, 4 - k), 0, 1)


def class_priors(seed: int, num_classes: int) -> Dict[str, np.ndarray]:
  """The dataset-wide typical look of each class (like "sky is bluish"): [C] each.

  Shared by the train and test scenes of one seed; every scene perturbs it, so a
  conventional model can learn the prior while the shots reveal a scene's own look.
  """
  rng = np.random.default_rng(np.random.SeedSequence([int(seed), 7919]))
  return {'hue': rng.random(num_classes),
          'sat': 0.35 + 0.55 * rng.random(num_classes),
          'val': 0.4 + 0.5 * rng.random(num_classes)}


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
    hue = priors['hue'] + rng.uniform(-hue_jitter, hue_jitter, c)
    sat = np.clip(priors['sat'] * rng.uniform(0.6, 1.4, c), 0.1, 1.0)
    val = np.clip(priors['val'] * rng.uniform(0.7, 1.3, c), 0.2, 1.0)
  base = _hsv_to_rgb(hue, sat, val)
  tex = _hsv_to_rgb(hue + rng.uniform(-0.3, 0.3, c),
                    np.clip(sat * rng.uniform(0.5, 1.3, c), 0, 1),
                    val * rng.uniform(0.35, 0.8, c))
  f32 = lambda x: np.asarray(x, np.float32)
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
  ys, xs = _grid(height, width)
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


def boundary_distance(maps: np.ndarray, cap: int = _BEVEL_PX) -> np.ndarray:
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
  ys, xs = _grid(height, width)
  tex = texture_fields(app, height, width) * app['contrast'][:, None, None]
  base, tcol = app['base'][:, None, None], app['tex'][:, None, None]
  fields = base + (tcol - base) * tex[..., None]  # [C,H,W,3] per-class colours
  pix = np.arange(height * width).reshape(height, width)
  img = fields.reshape(-1, 3)[maps.astype(np.intp) * (height * width) + pix]
  # Scene lighting: a smooth linear gradient in the scene's direction.
  ext_y, ext_x = height / min(height, width), width / min(height, width)
  proj = (np.cos(app['light_angle']) * (xs - ext_x / 2) +
          np.sin(app['light_angle']) * (ys - ext_y / 2))
  light = 1.0 + app['light_strength'] * proj / (0.5 * max(ext_x, ext_y))
  # Shared structure: outlines and a bevel near class boundaries.
  d = boundary_distance(maps)
  bevel = np.where(d == 0, 0.4, 0.8 + 0.2 * d / _BEVEL_PX).astype(np.float32)
  img *= (light.astype(np.float32)[None] * bevel)[..., None]
  # Uniform noise with standard deviation 0.02 (cheaper than Gaussian).
  img += np.float32(0.02 * np.sqrt(12.0)) * (
      rng.random(img.shape, dtype=np.float32) - np.float32(0.5))
  return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------
# Families of scenes (like cities or identities)
# ---------------------------------------------------------------------------


def family_of(index: int, num_families: int) -> int:
  """The family of task ``index`` (train and test alike): index % num_families.

  Train and test tasks of one index residue share a family, so test scenes are new
  scenes of known families and every family is equally frequent in both splits.
  """
  return int(index) % int(num_families)


def sample_family(seed: int, family: int, num_classes: int,
                  priors: Optional[Dict[str, np.ndarray]] = None) -> Dict[str, Any]:
  """The parameters a family of scenes shares: its layout statistics and look.

  Layout: a subset of 3-5 foreground classes and S slots (one per family class plus
  up to 3 more), each with a shape kind, a typical centre, size, aspect, angle and a
  probability of appearing in a map.  Appearance: per-class hue/saturation/value
  (the dataset-wide class prior with a family shift), texture frequency, angle,
  contrast and ring centre, the texture colour's offsets and a lighting direction
  and strength.

  Deterministic in (seed, family); independent of the split.
  """
  c = num_classes
  if c < 2:
    raise ValueError(f'synthetic scenes need num_classes >= 2, got {c}')
  rng = np.random.default_rng(np.random.SeedSequence([int(seed), 2, int(family)]))
  priors = priors if priors is not None else class_priors(seed, c)
  m = int(rng.integers(min(3, c - 1), min(5, c - 1) + 1))
  fg = 1 + rng.choice(c - 1, size=m, replace=False)
  s = min(_MAX_SHAPES, m + int(rng.integers(0, 4)))
  slot_class = np.concatenate([fg, rng.choice(fg, size=s - m)])
  rng.shuffle(slot_class)
  f32 = lambda x: np.asarray(x, np.float32)
  layout = {
      'cls': slot_class.astype(np.uint8),
      'kind': rng.choice(4, size=s, p=[0.3, 0.3, 0.25, 0.15]),
      'cy': f32(rng.uniform(0.1, 0.9, s)), 'cx': f32(rng.uniform(0.1, 0.9, s)),
      'a': f32(np.exp(rng.uniform(np.log(0.1), np.log(0.4), s))),
      'ratio': f32(rng.uniform(0.35, 1.25, s)),
      'theta': f32(rng.uniform(0, np.pi, s)),
      'sides': rng.integers(3, 7, size=s),
      'side_jitter': f32((rng.random((s, 6)) - 0.5) * 0.6),
      'side_radius': f32(0.6 + 0.4 * rng.random((s, 6))),
      'p': f32(rng.uniform(0.6, 1.0, s)),
  }
  look = {
      'hue': priors['hue'] + rng.uniform(-0.3, 0.3, c),
      'sat': np.clip(priors['sat'] * rng.uniform(0.6, 1.4, c), 0.1, 1.0),
      'val': np.clip(priors['val'] * rng.uniform(0.7, 1.3, c), 0.2, 1.0),
      'tex_dhue': rng.uniform(-0.3, 0.3, c), 'tex_sat': rng.uniform(0.5, 1.3, c),
      'tex_val': rng.uniform(0.35, 0.8, c),
      'freq': rng.uniform(2.0, 6.0, c), 'angle': rng.uniform(0, np.pi, c),
      'contrast': rng.uniform(0.25, 0.9, c), 'ring_center': rng.uniform(0, 1, (c, 2)),
      'light_angle': rng.uniform(0, 2 * np.pi), 'light_strength': rng.uniform(0.15, 0.45),
  }
  return {'layout': layout, 'look': look}


def sample_family_layouts(rng: np.random.Generator, family: Dict[str, Any], n: int,
                          height: int, width: int, jitter: float) -> np.ndarray:
  """n maps of one family: each slot appears with its probability, jittered.

  A slot's centre moves by N(0, jitter) (in units of the shorter side), its size by a
  factor exp(N(0, 2 * jitter)) and its angle by N(0, 3 * jitter) radians; kinds,
  classes and occlusion order are the family's.  Every map has at least one slot.

  Returns:
    uint8 [n, H, W] class ids.
  """
  lay = family['layout']
  s = lay['cls'].shape[0]
  ys, xs = _grid(height, width)
  ext_y, ext_x = height / min(height, width), width / min(height, width)
  f32 = lambda x: np.asarray(x, np.float32)
  active = rng.random((n, s)) < lay['p'][None]
  active[np.arange(n), np.argmax(lay['p'])] |= ~active.any(1)
  cy = f32((lay['cy'][None] + rng.normal(0, jitter, (n, s))) * ext_y)
  cx = f32((lay['cx'][None] + rng.normal(0, jitter, (n, s))) * ext_x)
  a = f32(lay['a'][None] * np.exp(rng.normal(0, 2 * jitter, (n, s))))
  b = f32(a * lay['ratio'][None] * np.exp(rng.normal(0, 2 * jitter, (n, s))))
  theta = f32(lay['theta'][None] + rng.normal(0, 3 * jitter, (n, s)))
  rep = lambda v: np.broadcast_to(v[None], (n,) + v.shape)
  kind, sides = rep(lay['kind']), rep(lay['sides'])
  sj, sr = rep(lay['side_jitter']), rep(lay['side_radius'])
  masks = np.zeros((n, s, height, width), bool)
  for k in range(4):
    idx = np.nonzero((kind == k) & active)
    if idx[0].size:
      masks[idx] = _rasterise(k, ys, xs, cy[idx], cx[idx], a[idx], b[idx], theta[idx],
                              sides[idx], sj[idx], sr[idx])
  maps = np.zeros((n, height, width), np.uint8)
  for j in range(s):  # later slots occlude earlier ones
    maps = np.where(masks[:, j], lay['cls'][j], maps)
  return maps


def sample_family_appearance(rng: np.random.Generator, family: Dict[str, Any],
                             jitter: float) -> Dict[str, Any]:
  """One scene's appearance around its family's look (same dict as sample_appearance).

  Per class: hue shifted by U(-jitter, jitter), saturation and value scaled by
  U(1 -+ 2 jitter) and U(1 -+ 1.5 jitter); texture frequency, angle and contrast
  jittered proportionally, texture phase the scene's own; lighting direction
  shifted by U(-+ 4 jitter) radians and strength scaled by U(1 -+ 2 jitter).
  """
  lk = family['look']
  c = lk['hue'].shape[0]
  u = lambda r, size=c: rng.uniform(-r, r, size)
  hue = lk['hue'] + u(jitter)
  sat = np.clip(lk['sat'] * (1 + u(2 * jitter)), 0.1, 1.0)
  val = np.clip(lk['val'] * (1 + u(1.5 * jitter)), 0.2, 1.0)
  base = _hsv_to_rgb(hue, sat, val)
  tex = _hsv_to_rgb(hue + lk['tex_dhue'], np.clip(sat * lk['tex_sat'], 0, 1),
                    val * lk['tex_val'])
  f32 = lambda x: np.asarray(x, np.float32)
  return {
      'base': f32(base), 'tex': f32(tex),
      'freq': f32(lk['freq'] * (1 + u(jitter))),
      'angle': f32(lk['angle'] + u(2 * jitter)),
      'phase': f32(rng.uniform(0, 2 * np.pi, c)),
      'contrast': f32(np.clip(lk['contrast'] * (1 + u(2 * jitter)), 0.1, 1.0)),
      'ring_center': f32(lk['ring_center'] + u(jitter, (c, 2))),
      'light_angle': f32(lk['light_angle'] + u(4 * jitter, None)),
      'light_strength': f32(lk['light_strength'] * (1 + u(2 * jitter, None))),
  }


def task_rng(seed: int, split: str, index: int) -> np.random.Generator:
  """Generator of task ``index`` of ``split`` (disjoint streams per split)."""
  return np.random.default_rng(
      np.random.SeedSequence([int(seed), _SPLIT_CODE[split], int(index)]))


def generate_task(seed: int, split: str, index: int, num_classes: int,
                  height: int, width: int, num_pairs: int, num_families: int = 0,
                  appearance_jitter: float = 0.1, layout_jitter: float = 0.06
                  ) -> Tuple[str, np.ndarray, np.ndarray]:
  """One scene: (name, maps uint8 [P,H,W], images uint8 [P,H,W,3]).

  num_families = 0: independent scenes (random layouts, appearance around the class
  priors).  num_families > 0: the scene belongs to family ``family_of(index)`` and
  draws its layouts and appearance around the family's (see :func:`sample_family`).
  """
  rng = task_rng(seed, split, index)
  priors = class_priors(seed, num_classes)
  if num_families > 0:
    fam = sample_family(seed, family_of(index, num_families), num_classes, priors)
    app = sample_family_appearance(rng, fam, appearance_jitter)
    maps = sample_family_layouts(rng, fam, num_pairs, height, width, layout_jitter)
  else:
    app = sample_appearance(rng, num_classes, priors)
    maps = sample_layouts(rng, num_pairs, num_classes, height, width)
  images = render(maps, app, rng)
  return f'{split}_{index:05d}', maps, images


# ---------------------------------------------------------------------------
# TFDS builder
# ---------------------------------------------------------------------------


@dataclasses.dataclass(eq=False)
class SyntheticScenesConfig(tfds.core.BuilderConfig):
  """Generation parameters; use :func:`make_builder_config` to build one."""
  num_classes: int = 8
  height: int = 32
  width: int = 32
  num_train_tasks: int = 200
  num_test_tasks: int = 20
  pairs_per_task: int = 30
  seed: int = 1234
  num_families: int = 0
  appearance_jitter: float = 0.1
  layout_jitter: float = 0.06


def make_builder_config(num_classes: int, height: int, width: int,
                        num_train_tasks: int, num_test_tasks: int,
                        pairs_per_task: int, seed: int, num_families: int = 0,
                        appearance_jitter: float = 0.1,
                        layout_jitter: float = 0.06) -> SyntheticScenesConfig:
  """A config whose name encodes every parameter (separate caches).

  Without families (num_families=0) the name is the one of the independent-scenes
  generator; with families it adds '_f{F}_aj{appearance}_lj{layout}'.
  """
  name = (f'c{num_classes}_h{height}_w{width}_tr{num_train_tasks}'
          f'_te{num_test_tasks}_p{pairs_per_task}_s{seed}')
  if num_families > 0:
    name += f'_f{num_families}_aj{appearance_jitter:g}_lj{layout_jitter:g}'
  return SyntheticScenesConfig(
      name=name, description='Synthetic scenes ' + name,
      num_classes=num_classes, height=height, width=width,
      num_train_tasks=num_train_tasks, num_test_tasks=num_test_tasks,
      pairs_per_task=pairs_per_task, seed=seed, num_families=int(num_families),
      appearance_jitter=float(appearance_jitter), layout_jitter=float(layout_jitter))


def builder_config_from_data_cfg(data_cfg) -> SyntheticScenesConfig:
  return make_builder_config(
      num_classes=int(data_cfg.num_classes), height=int(data_cfg.image_height),
      width=int(data_cfg.image_width),
      num_train_tasks=int(data_cfg.num_train_tasks),
      num_test_tasks=int(data_cfg.num_test_tasks),
      pairs_per_task=int(data_cfg.pairs_per_task),
      seed=int(data_cfg.synthetic_seed),
      num_families=int(data_cfg.get('num_families', 0)),
      appearance_jitter=float(data_cfg.get('family_appearance_jitter', 0.1)),
      layout_jitter=float(data_cfg.get('family_layout_jitter', 0.06)))


class SyntheticScenes(tfds.core.GeneratorBasedBuilder):
  """Synthetic scene-parsing tasks; one example = one scene (task)."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  BUILDER_CONFIGS = [make_builder_config(8, 32, 32, 200, 20, 30, 1234)]

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls):  # pylint: disable=no-self-argument
    # The base implementation needs the `importlib_resources` backport, which
    # TFDS 4.9.10 does not declare as a dependency; the file path is enough.
    return epath.Path(inspect.getfile(cls))

  def _info(self) -> tfds.core.DatasetInfo:
    cfg = self.builder_config
    return self.dataset_info_from_configs(
        description=__doc__.split('\n')[0],
        features=tasks_lib.TASK_FEATURES(cfg.height, cfg.width),
        homepage='https://github.com/',  # generated locally
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    return {'train': self._generate_examples('train'),
            'test': self._generate_examples('test')}

  def _generate_examples(self, split: str):
    cfg = self.builder_config
    num = cfg.num_train_tasks if split == 'train' else cfg.num_test_tasks
    for i in range(num):
      name, maps, images = generate_task(
          cfg.seed, split, i, cfg.num_classes, cfg.height, cfg.width,
          cfg.pairs_per_task, cfg.num_families, cfg.appearance_jitter,
          cfg.layout_jitter)
      yield name, {'name': name, 'maps': maps, 'images': images}


def prepare_builder(config: SyntheticScenesConfig, data_dir: str,
                    file_format: str = 'array_record') -> SyntheticScenes:
  """Builds (if not cached) and returns the prepared builder.

  ArrayRecord (the default) is read back without importing TensorFlow;
  'tfrecord' works too (read through tf.data).
  """
  if config.name in SyntheticScenes.builder_configs:
    config = config.name  # TFDS refuses a custom config named like a listed one
  builder = SyntheticScenes(data_dir=data_dir, config=config)
  builder.download_and_prepare(
      file_format=file_format,
      download_config=tfds.download.DownloadConfig(
          try_download_gcs=False,
          compute_stats=tfds.download.ComputeStatsMode.SKIP))
  return builder


@registry.register('synthetic')
def load_synthetic(data_cfg, split: str, workdir: str) -> tasks_lib.TaskSet:
  """Registry loader: builds/caches in data_cfg.data_dir or WORKDIR/tfds."""
  data_dir = data_cfg.data_dir or os.path.join(workdir, 'tfds')
  builder = prepare_builder(builder_config_from_data_cfg(data_cfg), data_dir)
  return tasks_lib.taskset_from_tfds(builder, split, int(data_cfg.num_classes))
