"""Synthetic scenes: a locally generated, download-free few-shot I2I dataset.

Each task is a *scene*: a clip of segmentation-map / image pairs (its frames).
A scene is 3-8 objects of classes 1..C-1 over background 0 (rotated rectangles,
ellipses, convex polygons and stripes, later ones occluding earlier ones).  From
frame to frame, as in a face or street clip, every object moves, turns and
scales, the camera shifts and zooms and the light changes (direction, strength,
gain).  The image renders the map with the scene's look, which the map does NOT
reveal:

* scene-specific: per-class base and texture colours (around dataset-wide class
  priors, or around the scene's family's look), texture frequency, orientation,
  phase and contrast, and the light around which the frames vary;
* shared by ALL scenes (what a general-purpose model can learn): the texture
  *kind* of a class (id % 3: stripes, checks, rings around the object's centre),
  dome-like shading of every object under the frame's light, dark 1-pixel
  outlines and a bevel along class boundaries, mild pixel noise.

Texture and shading are anchored to each object (computed in the object's own
frame) and the background's texture to the world, so they move with the objects
and the camera and never stay on image coordinates: a per-pixel lookup of the
shots does not predict a new frame, while a model that learned how maps render
can.

Layouts are in :mod:`bil_jax.data.scene_layouts`, appearance and rendering
in :mod:`bil_jax.data.scene_render`, families in
:mod:`bil_jax.data.scene_families`; this module draws whole tasks and holds
the TFDS builder.  Everything is vectorised numpy over the frames, objects and
pixels of a task.

Splits: 'train', 'val' (the monitor and every tuning decision) and 'test' (the
final evaluation only).  Generation is deterministic from (seed, split, task
index, condition); every split and condition has its own seed stream, so the
splits are disjoint.  The seed is ``data.synthetic_seed``, or config.seed where
that is -1 (:func:`data_seed`).  Task names: '{split}_{i:05d}' without families
and for training; with families, val and test scenes are '{split}_seen_{i:05d}'
(a new scene of a training family) or '{split}_unseen_{i:05d}' (a scene of one of
the split's own ``unseen_families``, never seen in training);
:func:`bil_jax.data.tasks.task_condition` maps a name to its condition.

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

# Seed-stream codes of the splits (2 is taken by scene_families.sample_family).
_SPLIT_CODE = {'train': 0, 'test': 1, 'val': 3}
SPLITS = ('train', 'val', 'test')

# ---------------------------------------------------------------------------
# Seeds, splits and task names
# ---------------------------------------------------------------------------


def data_seed(data_cfg) -> int:
  """The generator's seed: ``data.synthetic_seed``, or config.seed where it is -1.

  ``data.config_seed`` is a reference to config.seed (see config_lib), so every
  run seed draws its own scenes and families unless synthetic_seed pins them.
  """
  seed = int(data_cfg.synthetic_seed)
  if seed == -1:
    return int(data_cfg.config_seed)
  if seed < 0:
    raise ValueError(f'data.synthetic_seed={seed}: use -1 (follow config.seed) or a '
                     'value >= 0')
  return seed


def split_conditions(split: str, num_tasks: int, num_families: int,
                     unseen_families: int) -> Tuple[Tuple[str, int], ...]:
  """(condition, index) of each task of a split, in task order.

  Conditions: 'all' without families and for every training task; with families
  'seen' (a scene of a training family), and, where unseen_families > 0, 'unseen'
  for the last num_tasks // 2 tasks of val and test (index counted within the
  condition).
  """
  if split not in _SPLIT_CODE:
    raise ValueError(f'synthetic split must be one of {SPLITS}, got {split!r}')
  if num_families <= 0 or split == 'train':
    return tuple(('all', i) for i in range(num_tasks))
  num_unseen = num_tasks // 2 if unseen_families > 0 else 0
  return (tuple(('seen', i) for i in range(num_tasks - num_unseen)) + tuple(
      ('unseen', i) for i in range(num_unseen)))


def task_name(split: str, condition: str, index: int) -> str:
  """'{split}_{i:05d}' (condition 'all') or '{split}_{condition}_{i:05d}'."""
  if condition == 'all':
    return f'{split}_{index:05d}'
  return f'{split}_{condition}_{index:05d}'


def task_family(split: str, condition: str, index: int, num_families: int,
                unseen_families: int) -> int:
  """The family id of a task: seen families are 0..F-1 (task i: i % F); val's
  unseen families F..F+U-1 and test's F+U..F+2U-1, so the three sets are disjoint."""
  if condition != 'unseen':
    return scene_families.family_of(index, num_families)
  first = num_families + (unseen_families if split == 'test' else 0)
  return first + index % unseen_families


# ---------------------------------------------------------------------------
# One task (scene)
# ---------------------------------------------------------------------------


def task_rng(seed: int, split: str, index: int, condition: str = 'all') -> np.random.Generator:
  """Generator of one task (disjoint streams per split and condition)."""
  key = [int(seed), _SPLIT_CODE[split], int(index)]
  if condition == 'unseen':
    key.append(1)
  return np.random.default_rng(np.random.SeedSequence(key))


def render_clip(rng: np.random.Generator, objects, look, num_pairs: int, height: int, width: int,
                motion: float) -> Tuple[np.ndarray, np.ndarray]:
  """The frames of one scene: (maps uint8 [P,H,W], images uint8 [P,H,W,3]).

  Objects move, turn and scale, the camera shifts and zooms and the light changes
  from frame to frame, all scaled by ``motion``.
  """
  moves = scene_layouts.sample_motion(rng, num_pairs, objects['cls'].shape[0], motion)
  frame = scene_layouts.paint(objects, moves, height, width)
  light = scene_render.sample_lighting(rng, look, moves['t'], motion)
  return frame['maps'], scene_render.render(frame, look, light, rng)


def generate_task(seed: int, split: str, index: int, num_classes: int, height: int, width: int,
                  num_pairs: int, num_families: int = 0, appearance_jitter: float = 0.1,
                  layout_jitter: float = 0.1, condition: str = 'all', unseen_families: int = 0,
                  motion: float = 1.0) -> Tuple[str, np.ndarray, np.ndarray]:
  """One scene, a clip of num_pairs frames: (name, maps uint8 [P,H,W], images uint8
  [P,H,W,3]).

  num_families = 0: independent scenes (random objects, look around the class
  priors).  num_families > 0: the scene belongs to family :func:`task_family` and
  draws its objects and look around the family's (see :func:`sample_family`).
  ``condition`` ('all', 'seen', 'unseen') is one of :func:`split_conditions`.
  """
  if condition == 'unseen' and (num_families <= 0 or unseen_families <= 0):
    raise ValueError('an unseen-family task needs num_families > 0 and '
                     'unseen_families > 0')
  if num_families > 0 and condition == 'all' and split != 'train':
    condition = 'seen'
  rng = task_rng(seed, split, index, condition)
  priors = scene_render.class_priors(seed, num_classes)
  if num_families > 0:
    family = task_family(split, condition, index, num_families, unseen_families)
    fam = scene_families.sample_family(seed, family, num_classes, priors)
    look = scene_families.sample_family_appearance(rng, fam, appearance_jitter)
    objects = scene_families.sample_family_objects(rng, fam, height, width, layout_jitter)
  else:
    look = scene_render.sample_appearance(rng, num_classes, priors)
    objects = scene_layouts.sample_objects(rng, num_classes, height, width)
  maps, images = render_clip(rng, objects, look, num_pairs, height, width, motion)
  return task_name(split, condition, index), maps, images


# ---------------------------------------------------------------------------
# TFDS builder
# ---------------------------------------------------------------------------


@dataclasses.dataclass(eq=False)
class SyntheticScenesConfig(task_builder.TaskConfig):
  """Generation parameters (and height x width); use :func:`make_builder_config`."""
  num_classes: int = 8
  # Tasks (scenes) per split, and pairs (frames) per task.
  num_train_tasks: int = 200
  num_val_tasks: int = 20
  num_test_tasks: int = 20
  pairs_per_task: int = 30
  seed: int = 0  # resolved by data_seed
  # Families (0: every scene independent); val and test each add unseen_families more.
  num_families: int = 0
  unseen_families: int = 0
  appearance_jitter: float = 0.1
  layout_jitter: float = 0.1
  motion: float = 1.0  # scales every change between the frames of a clip

  def num_tasks(self, split: str) -> int:
    return {'train': self.num_train_tasks, 'val': self.num_val_tasks,
            'test': self.num_test_tasks}[split]


def make_builder_config(num_classes: int, height: int, width: int, num_train_tasks: int,
                        num_test_tasks: int, pairs_per_task: int, seed: int, num_families: int = 0,
                        appearance_jitter: float = 0.1, layout_jitter: float = 0.1,
                        num_val_tasks: int = 20, unseen_families: int = 0,
                        motion: float = 1.0) -> SyntheticScenesConfig:
  """A config whose name encodes every parameter (separate caches).

  Without families (num_families=0) the name is
  'c{C}_h{H}_w{W}_tr{train}_va{val}_te{test}_p{pairs}_m{motion}_s{seed}'; with families
  it adds
  '_f{F}_u{unseen}_aj{appearance}_lj{layout}'.
  """
  for key, value in (('num_train_tasks', num_train_tasks), ('num_val_tasks', num_val_tasks),
                     ('num_test_tasks', num_test_tasks), ('pairs_per_task', pairs_per_task)):
    if int(value) < 1:
      raise ValueError(f'data.{key}={value}: the synthetic dataset needs at least 1')
  if motion < 0:
    raise ValueError(f'data.motion={motion}: must be >= 0')
  if unseen_families > 0 and num_families <= 0:
    raise ValueError(f'data.unseen_families={unseen_families} needs data.num_families > 0')
  name = (f'c{num_classes}_h{height}_w{width}_tr{num_train_tasks}'
          f'_va{num_val_tasks}_te{num_test_tasks}_p{pairs_per_task}_m{motion:g}_s{seed}')
  if num_families > 0:
    name += (f'_f{num_families}_u{unseen_families}'
             f'_aj{appearance_jitter:g}_lj{layout_jitter:g}')
  return SyntheticScenesConfig(name=name, description='Synthetic scenes ' + name,
                               num_classes=num_classes, height=height, width=width,
                               num_train_tasks=num_train_tasks, num_val_tasks=int(num_val_tasks),
                               num_test_tasks=num_test_tasks, pairs_per_task=pairs_per_task,
                               seed=seed, num_families=int(num_families),
                               unseen_families=int(unseen_families),
                               appearance_jitter=float(appearance_jitter),
                               layout_jitter=float(layout_jitter), motion=float(motion))


def builder_config_from_data_cfg(data_cfg) -> SyntheticScenesConfig:
  """The builder config of ``config.data`` (seed resolved by :func:`data_seed`)."""
  return make_builder_config(
      num_classes=int(data_cfg.num_classes), height=int(data_cfg.image_height),
      width=int(data_cfg.image_width), num_train_tasks=int(data_cfg.num_train_tasks),
      num_val_tasks=int(data_cfg.num_val_tasks), num_test_tasks=int(data_cfg.num_test_tasks),
      pairs_per_task=int(data_cfg.pairs_per_task), seed=data_seed(data_cfg),
      num_families=int(data_cfg.get('num_families',
                                    0)), unseen_families=int(data_cfg.get('unseen_families', 0)),
      appearance_jitter=float(data_cfg.get('family_appearance_jitter', 0.1)),
      layout_jitter=float(data_cfg.get('family_layout_jitter',
                                       0.1)), motion=float(data_cfg.get('motion', 1.0)))


def generate_split(cfg: SyntheticScenesConfig, split: str):
  """Yields every (name, maps, images) task of ``split`` under ``cfg``."""
  for condition, i in split_conditions(split, cfg.num_tasks(split), cfg.num_families,
                                       cfg.unseen_families):
    yield generate_task(cfg.seed, split, i, cfg.num_classes, cfg.height, cfg.width,
                        cfg.pairs_per_task, cfg.num_families, cfg.appearance_jitter,
                        cfg.layout_jitter, condition=condition, unseen_families=cfg.unseen_families,
                        motion=cfg.motion)


class SyntheticScenes(task_builder.TaskBuilder):
  """Synthetic scene-parsing tasks; one example = one scene (task)."""

  BUILDER_CONFIGS = [make_builder_config(8, 32, 32, 200, 20, 30, 0)]
  HOMEPAGE = 'https://github.com/'  # generated locally

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    return {split: self._generate_examples(split) for split in SPLITS}

  def _generate_examples(self, split: str):
    yield from task_builder.examples(generate_split(self.builder_config, split))


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
      file_format=file_format, download_config=tfds.download.DownloadConfig(
          try_download_gcs=False, compute_stats=tfds.download.ComputeStatsMode.SKIP))
  return builder


@registry.register('synthetic')
def load_synthetic(data_cfg, split: str, workdir: str) -> tasks_lib.TaskSet:
  """Registry loader of split 'train', 'val' or 'test'.

  Builds (or reads the cache) in data_cfg.data_dir or WORKDIR/tfds.
  """
  if split not in SPLITS:
    raise ValueError(f'synthetic split must be one of {SPLITS}, got {split!r}')
  data_dir = data_cfg.data_dir or os.path.join(workdir, 'tfds')
  builder = prepare_builder(builder_config_from_data_cfg(data_cfg), data_dir)
  return tasks_lib.taskset_from_tfds(builder, split, int(data_cfg.num_classes))
