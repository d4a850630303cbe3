"""Families of synthetic scenes (like cities or identities).

A family fixes a layout template (slots of objects with typical positions and
sizes) and a look (class colours, textures, lighting); each of its scenes draws
its objects from the template and its look around the family's, both jittered.
Deterministic in (seed, family); independent of the split.  Val and test add
families never seen in training (ids beyond the training ones, see
:func:`bil_jax.data.synthetic.task_family`).
"""
from typing import Any, Dict, Optional

import numpy as np

from bil_jax.data import scene_layouts
from bil_jax.data import scene_render

f32 = scene_render.f32


def family_of(index: int, num_families: int) -> int:
  """The training family of task ``index`` (train, val and test alike):
  index % num_families, so every training family is equally frequent in each split."""
  return int(index) % int(num_families)


def sample_family(seed: int, family: int, num_classes: int,
                  priors: Optional[Dict[str, np.ndarray]] = None) -> Dict[str, Any]:
  """The parameters a family of scenes shares: its layout statistics and look.

  Layout: a subset of 3-5 foreground classes and S slots (one per family class plus
  up to 3 more), each with a shape kind, a typical centre, size, aspect, angle and a
  probability of appearing in a map.  Appearance: per-class hue/saturation/value
  (the dataset-wide class prior with a family shift), texture frequency, angle,
  contrast and phase, the texture colour's offsets and a lighting direction and
  strength.

  Deterministic in (seed, family); independent of the split.
  """
  c = num_classes
  if c < 2:
    raise ValueError(f'synthetic scenes need num_classes >= 2, got {c}')
  rng = np.random.default_rng(np.random.SeedSequence([int(seed), 2, int(family)]))
  priors = priors if priors is not None else scene_render.class_priors(seed, c)
  m = int(rng.integers(min(3, c - 1), min(5, c - 1) + 1))
  fg = 1 + rng.choice(c - 1, size=m, replace=False)
  s = min(scene_layouts.MAX_OBJECTS, m + int(rng.integers(0, 4)))
  slot_class = np.concatenate([fg, rng.choice(fg, size=s - m)])
  rng.shuffle(slot_class)
  layout = {
      'cls': slot_class.astype(np.uint8),
      'kind': rng.choice(4, size=s, p=list(scene_layouts.SHAPE_KIND_PROBS)),
      'cy': f32(rng.uniform(0.1, 0.9, s)),
      'cx': f32(rng.uniform(0.1, 0.9, s)),
      'a': f32(np.exp(rng.uniform(np.log(0.1), np.log(0.4), s))),
      'ratio': f32(rng.uniform(0.35, 1.25, s)),
      'theta': f32(rng.uniform(0, np.pi, s)),
      'sides': rng.integers(3, 7, size=s),
      'side_jitter': f32((rng.random((s, 6)) - 0.5) * 0.6),
      'side_radius': f32(0.6 + 0.4 * rng.random((s, 6))),
      'p': f32(rng.uniform(0.6, 1.0, s)),
  }
  hue, sat, val = scene_render.perturb_hsv(rng, priors, 0.3)
  look = {
      'hue': hue,
      'sat': sat,
      'val': val,
      'tex_dhue': rng.uniform(-0.3, 0.3, c),
      'tex_sat': rng.uniform(0.5, 1.3, c),
      'tex_val': rng.uniform(0.35, 0.8, c),
      'freq': rng.uniform(1.0, 3.5, c),
      'angle': rng.uniform(0, np.pi, c),
      'phase': rng.uniform(0, 2 * np.pi, c),
      'contrast': rng.uniform(0.5, 1.0, c),
      'light_angle': rng.uniform(0, 2 * np.pi),
      'light_strength': rng.uniform(0.3, 0.6),
  }
  return {'layout': layout, 'look': look}


def sample_family_objects(rng: np.random.Generator, family: Dict[str, Any], height: int, width: int,
                          jitter: float) -> Dict[str, np.ndarray]:
  """One scene's objects (as :func:`scene_layouts.sample_objects`) from its family.

  Each slot is an object of the scene with its probability (at least one is); its
  centre moves by N(0, jitter) (units of the shorter side), its size by a factor
  exp(N(0, 2 * jitter)) and its angle by N(0, 3 * jitter) radians; kinds, classes
  and occlusion order are the family's.
  """
  lay = family['layout']
  s = lay['cls'].shape[0]
  ext_y, ext_x = scene_layouts.extent(height, width)
  active = rng.random(s) < lay['p']
  active[np.argmax(lay['p'])] |= ~active.any()
  a = lay['a'] * np.exp(rng.normal(0, 2 * jitter, s))
  obj = {
      'cls': lay['cls'],
      'kind': lay['kind'],
      'cy': f32((lay['cy'] + rng.normal(0, jitter, s)) * ext_y),
      'cx': f32((lay['cx'] + rng.normal(0, jitter, s)) * ext_x),
      'a': f32(a),
      'b': f32(a * lay['ratio'] * np.exp(rng.normal(0, 2 * jitter, s))),
      'theta': f32(lay['theta'] + rng.normal(0, 3 * jitter, s)),
      'sides': lay['sides'],
      'side_jitter': lay['side_jitter'],
      'side_radius': lay['side_radius'],
  }
  return {k: v[active] for k, v in obj.items()}


def sample_family_appearance(rng: np.random.Generator, family: Dict[str, Any],
                             jitter: float) -> Dict[str, Any]:
  """One scene's appearance around its family's look (same dict as sample_appearance).

  Per class: hue shifted by U(-jitter, jitter), saturation and value scaled by
  U(1 -+ 2 jitter) and U(1 -+ 1.5 jitter); texture frequency, angle and contrast
  jittered proportionally, texture phase shifted by U(-+ 4 jitter); lighting direction
  shifted by U(-+ 4 jitter) radians and strength scaled by U(1 -+ 2 jitter).
  (Each frame's light then varies around the scene's, see scene_render.)
  """
  lk = family['look']
  c = lk['hue'].shape[0]
  u = lambda r, size=c: rng.uniform(-r, r, size)
  hue = lk['hue'] + u(jitter)
  sat = np.clip(lk['sat'] * (1 + u(2 * jitter)), 0.1, 1.0)
  val = np.clip(lk['val'] * (1 + u(1.5 * jitter)), 0.2, 1.0)
  base, tex = scene_render.class_colours(hue, sat, val, lk['tex_dhue'], lk['tex_sat'],
                                         lk['tex_val'])
  return {
      'base': f32(base),
      'tex': f32(tex),
      'freq': f32(lk['freq'] * (1 + u(jitter))),
      'angle': f32(lk['angle'] + u(2 * jitter)),
      'phase': f32(lk['phase'] + u(4 * jitter)),
      'contrast': f32(np.clip(lk['contrast'] * (1 + u(2 * jitter)), 0.1, 1.0)),
      'light_angle': f32(lk['light_angle'] + u(4 * jitter, None)),
      'light_strength': f32(lk['light_strength'] * (1 + u(2 * jitter, None))),
  }
