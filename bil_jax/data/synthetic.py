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

Layouts are in :mod:`bil_jax.data.scene_layouts`, appearance and rendering
in :mod:`bil_jax.data.scene_render`, families in
:mod:`bil_jax.data.scene_families`; this module draws whole tasks and holds
the TFDS builder.  Everything is vectorised numpy; one task of 30 pairs at
32x32 renders in about a millisecond.  Generation is deterministic from (seed, split, task index);
train and test tasks use different seed streams and names ('train_00000',
'test_00000'), so they are disjoint.

The TFDS builder ``SyntheticScenes`` stores one task per example with
:func:`bil_jax.data.tasks.TASK_FEATURES`; its BuilderConfig name encodes all
generation parameters, so different settings cache separately in data_dir.
It is registered in the dataset registry as 'synthetic'.
"""
import dataclasses
import os
from typing import Tuple

import numpy as np
import tensorflow_datasets as tfds

from bil_jax.data import registry
from bil_jax.data import scene_families
from bil_jax.data import scene_layouts
from bil_jax.data import scene_render
from bil_jax.data import task_builder
from bil_jax.data import tasks as tasks_lib

# Re-exported: the generator's parts live in scene_layouts, scene_render and
# scene_families; callers keep importing them from here.
sample_layouts = scene_layouts.sample_layouts
class_priors = scene_render.class_priors
sample_appearance = scene_render.sample_appearance
texture_fields = scene_render.texture_fields
boundary_distance = scene_render.boundary_distance
render = scene_render.render
family_of = scene_families.family_of
sample_family = scene_families.sample_family
sample_family_layouts = scene_families.sample_family_layouts
sample_family_appearance = scene_families.sample_family_appearance

_SPLIT_CODE = {'train': 0, 'test': 1}


# ---------------------------------------------------------------------------
# One task (scene)
# ---------------------------------------------------------------------------


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
class SyntheticScenesConfig(task_builder.TaskConfig):
  """Generation parameters (and height x width); use :func:`make_builder_config`."""
  num_classes: int = 8
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


class SyntheticScenes(task_builder.TaskBuilder):
  """Synthetic scene-parsing tasks; one example = one scene (task)."""

  BUILDER_CONFIGS = [make_builder_config(8, 32, 32, 200, 20, 30, 1234)]
  HOMEPAGE = 'https://github.com/'  # generated locally

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    return {'train': self._generate_examples('train'),
            'test': self._generate_examples('test')}

  def _generate_examples(self, split: str):
    cfg = self.builder_config
    num = cfg.num_train_tasks if split == 'train' else cfg.num_test_tasks
    yield from task_builder.examples(generate_task(
        cfg.seed, split, i, cfg.num_classes, cfg.height, cfg.width,
        cfg.pairs_per_task, cfg.num_families, cfg.appearance_jitter,
        cfg.layout_jitter) for i in range(num))


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
