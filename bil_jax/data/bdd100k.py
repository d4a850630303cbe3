"""BDD100K semantic segmentation pairs, each pair a 1-shot task (Sec. 5.1).

"BDD100K is a real-world dataset with 7,000 segmentation-image training pairs
[...] we treat each pair as a single task for the 1-shot experiment."

Layout (``manual_dir``, or ``manual_dir/bdd100k``), as BDD100K ships it::

  images/10k/{train,val}/<name>.jpg
  labels/sem_seg/masks/{train,val}/<name>.png    ids 0-18, 255 void

The older release layout ``seg/images/{train,val}/<name>.jpg`` with
``seg/labels/{train,val}/<name>_train_id.png`` is read as well.  Split
'test' is BDD's val (1,000) if present; 'val' is data.val_fraction of BDD's
train (7,000 pairs), chosen by sorted name (:mod:`bil_jax.data.holdout`), and
'train' the rest of it.

Classes: the 19 Cityscapes train ids, 0 road, 1 sidewalk, 2 building, 3 wall,
4 fence, 5 pole, 6 traffic light, 7 traffic sign, 8 vegetation, 9 terrain,
10 sky, 11 person, 12 rider, 13 car, 14 truck, 15 bus, 16 train,
17 motorcycle, 18 bicycle, plus **void: label 255 becomes class 19**, so that
the generator sees unlabelled pixels as a class of their own (C = 20).  Any
other id is a image_io.DataError naming the file.

Images and labels are resized keeping the aspect ratio and centre-cropped to
data.image_height x data.image_width (128x256 in the paper).  Every example is
one task of ONE pair; configs set data.reuse_pairs=True so that support and
query sets of size > 1 are filled by (augmented) repetition.

Images without a label are skipped (counted and printed); a label without its
image, an unreadable file, an image and label of different sizes or an id
outside 0-18/255 stop the build with a one-line error naming the file.

Registered as data.name = 'bdd100k' (train and val: BDD train, test: BDD
val).  The
BDD100K -> CamVid setting of the paper is data.name = 'bdd_camvid'
(:mod:`bil_jax.data.camvid`).
"""
import dataclasses
import os
from typing import Dict, Iterator, List, Tuple

import numpy as np
import tensorflow_datasets as tfds

from bil_jax.data import holdout
from bil_jax.data import image_io
from bil_jax.data import paired_folder
from bil_jax.data import registry
from bil_jax.data import task_builder
from bil_jax.data import tasks as tasks_lib

BDD_CLASSES = ('road', 'sidewalk', 'building', 'wall', 'fence', 'pole', 'traffic light',
               'traffic sign', 'vegetation', 'terrain', 'sky', 'person', 'rider', 'car', 'truck',
               'bus', 'train', 'motorcycle', 'bicycle', 'void')
NUM_CLASSES = len(BDD_CLASSES)  # 20
VOID = 19  # our id of BDD's void / unlabelled pixels
BDD_IGNORE = 255  # BDD's id for them

# builder split -> BDD split folder ('val' holds out part of BDD's train)
SPLIT_FOLDERS = {'train': 'train', 'val': 'train', 'test': 'val'}
WHAT = ('BDD100K: images/10k/{train,val}/*.jpg and '
        'labels/sem_seg/masks/{train,val}/*.png (see docs/datasets.md)')


def find_root(manual_dir: str) -> str:
  """manual_dir or manual_dir/bdd100k, whichever holds a known layout."""
  for root in (manual_dir, os.path.join(manual_dir, 'bdd100k')):
    if (os.path.isdir(os.path.join(root, 'labels', 'sem_seg', 'masks')) or
        os.path.isdir(os.path.join(root, 'seg', 'labels'))):
      return root
  raise image_io.DataError(
      manual_dir, 'no BDD100K layout found: expected '
      'labels/sem_seg/masks/ (or seg/labels/) here or in bdd100k/')


def list_pairs(root: str, folder: str) -> List[Tuple[str, str, str]]:
  """Sorted (name, image path, label path) of one BDD split folder.

  Returns [] when the split is absent.  Raises image_io.DataError for a label without
  an image; prints how many images without a label were skipped.
  """
  new_lab = os.path.join(root, 'labels', 'sem_seg', 'masks', folder)
  if os.path.isdir(new_lab):
    img_dir, lab_dir, suffix = (os.path.join(root, 'images', '10k', folder), new_lab, '')
  else:
    img_dir = os.path.join(root, 'seg', 'images', folder)
    lab_dir, suffix = os.path.join(root, 'seg', 'labels', folder), '_train_id'
    if not os.path.isdir(lab_dir):
      return []
  if not os.path.isdir(img_dir):
    raise image_io.DataError(img_dir, f'missing; the labels in {lab_dir} need their '
                             'images here')
  images = image_io.list_images(img_dir)
  pairs = []
  for stem, lab_path in image_io.list_images(lab_dir).items():
    name = stem[:-len(suffix)] if suffix and stem.endswith(suffix) else stem
    if name not in images:
      raise image_io.DataError(lab_path, f'has no image {name}.jpg in {img_dir}')
    pairs.append((name, images.pop(name), lab_path))
  if images:
    print(f'bdd100k/{folder}: skipped {len(images)} images without a label '
          f'in {img_dir}', flush=True)
  return pairs


def bdd_ids(label_path: str, ids: np.ndarray) -> np.ndarray:
  """BDD ids (0-18, 255) -> our 20 classes (255 -> 19): uint8 [H, W]."""
  image_io.check_ids(label_path, ids, VOID, extra=(BDD_IGNORE,))
  return np.where(ids == BDD_IGNORE, VOID, ids).astype(np.uint8)


def read_pair(image_path: str, label_path: str, height: int,
              width: int) -> Tuple[np.ndarray, np.ndarray]:
  """One pair resized + centre-cropped: (uint8 [H, W] ids, uint8 [H, W, 3])."""
  image = image_io.read_rgb(image_path)
  ids = image_io.read_ids(label_path)
  image_io.check_same_size(image_path, image, label_path, ids)
  image, ids = image_io.resize_center_crop(image, bdd_ids(label_path, ids), height, width)
  return ids, image


def generate_tasks(manual_dir: str, split: str, height: int, width: int,
                   val_fraction: float = 0.1) -> Iterator[task_builder.Task]:
  """Yields one task per pair: (name, maps [1,H,W], images [1,H,W,3]); 'train' and
  'val' split BDD's train by :func:`holdout.items` with ``val_fraction``."""
  root = find_root(manual_dir)
  pairs = list_pairs(root, SPLIT_FOLDERS[split])
  if not pairs:
    raise image_io.DataError(root, f'no labelled pairs for BDD split '
                             f'{SPLIT_FOLDERS[split]!r}')
  if split != 'test':
    _, keep = holdout.items(split, lambda _: [n for n, _, _ in pairs], False, val_fraction,
                            lambda _: os.path.join(root, 'labels', 'sem_seg', 'masks', 'train'))
    keep = set(keep)
    pairs = [p for p in pairs if p[0] in keep]
  for name, image_path, label_path in pairs:
    ids, image = read_pair(image_path, label_path, height, width)
    yield name, ids[None], image[None]


def available_splits(manual_dir: str) -> List[str]:
  """Builder splits whose BDD label folder exists."""
  root = find_root(manual_dir)
  return [
      s for s, f in SPLIT_FOLDERS.items()
      if os.path.isdir(os.path.join(root, 'labels', 'sem_seg', 'masks', f)) or
      os.path.isdir(os.path.join(root, 'seg', 'labels', f))
  ]


@dataclasses.dataclass(eq=False)
class Bdd100kConfig(task_builder.TaskConfig):
  """BDD100K pairs at height x width; val_fraction of BDD's train is 'val'."""
  val_fraction: float = 0.1


def make_builder_config(height: int, width: int, val_fraction: float = 0.1) -> Bdd100kConfig:
  return task_builder.sized_config(Bdd100kConfig, 'BDD100K pairs', height, width,
                                   holdout.source_tag(False, val_fraction),
                                   val_fraction=val_fraction)


class Bdd100kTasks(task_builder.ManualTaskBuilder):
  """BDD100K segmentation pairs; one example = one single-pair task."""

  MANUAL_DOWNLOAD_INSTRUCTIONS = WHAT
  HOMEPAGE = 'https://bdd-data.berkeley.edu/'

  def _splits(self, manual_dir: str):
    splits = available_splits(manual_dir)
    if 'train' not in splits:
      raise image_io.DataError(find_root(manual_dir), 'no BDD100K train split '
                               '(labels/sem_seg/masks/train/)')
    return splits

  def _tasks(self, manual_dir: str, split: str):
    cfg = self.builder_config
    return generate_tasks(manual_dir, split, cfg.height, cfg.width, cfg.val_fraction)


def bdd_dir(data_cfg) -> str:
  """data.bdd100k_dir, else MANUAL_DIR/bdd100k if it exists, else MANUAL_DIR."""
  return paired_folder.dataset_dir(data_cfg, 'bdd100k_dir', 'bdd100k')


def prepare_data(data_cfg, workdir: str) -> Dict[str, tfds.core.DatasetBuilder]:
  """Prepares BDD100K for data_cfg; {split: builder}."""
  builder = paired_folder.prepare(
      Bdd100kTasks,
      make_builder_config(int(data_cfg.image_height), int(data_cfg.image_width),
                          holdout.val_fraction(data_cfg)),
      paired_folder.default_data_dir(data_cfg, workdir), bdd_dir(data_cfg), WHAT)
  return {s: builder for s in builder.info.splits}


def check_num_classes(data_cfg, what: str) -> None:
  if int(data_cfg.num_classes) != NUM_CLASSES:
    raise ValueError(f'{what} has {NUM_CLASSES} classes (19 + void); set '
                     f'data.num_classes={NUM_CLASSES}, not {data_cfg.num_classes}')


@registry.register('bdd100k')
def load_bdd100k(data_cfg, split: str, workdir: str) -> tasks_lib.TaskSet:
  """Registry loader: 'train' and 'val' = BDD train (held-out part: 'val'), 'test' = BDD
  val."""
  check_num_classes(data_cfg, 'BDD100K')
  builders = prepare_data(data_cfg, workdir)
  if split not in builders:
    raise image_io.DataError(bdd_dir(data_cfg), f'no BDD100K {SPLIT_FOLDERS[split]} '
                             'split was prepared')
  ts = tasks_lib.taskset_from_tfds(builders[split], split, NUM_CLASSES)
  root = bdd_dir(data_cfg) or '<bdd100k_dir>'
  return paired_folder.check_task_sizes(
      ts, data_cfg, split,
      lambda n: os.path.join(root, 'labels', 'sem_seg', 'masks', SPLIT_FOLDERS[split], n + '.png'))
