"""Paired folders: any user data as few-shot tasks, plus the TFDS machinery
shared by every builder that reads the user's copy through ``manual_dir``.

Layout (``data.manual_dir`` = ROOT)::

  ROOT/train/<task>/images/<name>.png|.jpg    RGB images
  ROOT/train/<task>/labels/<name>.png         single-channel class ids
  ROOT/val/<task>/...                         the same (optional)
  ROOT/test/<task>/...                        the same

Without ROOT/val/, the validation tasks are a fixed fraction
(data.val_fraction) of ROOT/train/'s task folders, chosen by sorted name and
left out of training (:mod:`bil_jax.data.holdout`).

Every ``<task>`` folder is one task (scene / identity / clip); an image and
its label share ``<name>``.  Labels hold ids 0..data.num_classes-1 (8-bit or
16-bit grey, or a palette PNG whose palette INDEX is the id).  Images are
resized to data.image_height x data.image_width (antialiased bilinear; labels
nearest neighbour); the aspect ratio is not kept.

Bad input fails with a one-line :class:`image_io.DataError` naming the file:
an unreadable image, a label id outside the classes, an image and label of
different sizes, an image without its label (or a label without its image),
a task with fewer pairs than :func:`required_pairs` (unless data.reuse_pairs), a
missing manual_dir.  TFDS writes into a temporary folder that it renames only
when every split is generated, so a failure leaves no prepared dataset in the
data directory.

Registered as data.name = 'paired_folder'.  The builder config name holds the
size, the number of classes, a hash of the absolute ROOT path and where the
validation tasks come from, so two folders never share a cache.
"""
import dataclasses
import hashlib
import os
from typing import Callable, Dict, Iterator, Tuple

import numpy as np
import tensorflow_datasets as tfds

from bil_jax.data import holdout
from bil_jax.data import image_io
from bil_jax.data import registry
from bil_jax.data import task_builder
from bil_jax.data import tasks as tasks_lib


# ---------------------------------------------------------------------------
# Shared by all manual_dir task builders
# ---------------------------------------------------------------------------
def prepare(builder_cls, config, data_dir: str, manual_dir: str,
            what: str) -> tfds.core.DatasetBuilder:
  """Builds (unless already prepared in data_dir) and returns the builder.

  Args:
    builder_cls: a task_builder.ManualTaskBuilder subclass.
    config: its BuilderConfig.
    data_dir: the TFDS data directory.
    manual_dir: the user's copy of the dataset; checked only when the
      dataset still has to be prepared.
    what: what manual_dir should hold, for the error message.

  Raises:
    image_io.DataError: one line naming the file, for bad or missing input.
  """
  builder = builder_cls(data_dir=data_dir, config=config)
  if builder.is_prepared():
    return builder
  image_io.check_manual_dir(manual_dir, what)
  builder.download_and_prepare(
      file_format='array_record', download_config=tfds.download.DownloadConfig(
          manual_dir=manual_dir, try_download_gcs=False,
          compute_stats=tfds.download.ComputeStatsMode.SKIP))
  return builder


def default_data_dir(data_cfg, workdir: str) -> str:
  return data_cfg.data_dir or os.path.join(workdir, 'tfds')


def dataset_dir(data_cfg, key: str, subdir: str) -> str:
  """data.<key>, else MANUAL_DIR/<subdir> if it exists, else MANUAL_DIR."""
  explicit = data_cfg.get(key, '')
  if explicit:
    return explicit
  sub = os.path.join(data_cfg.manual_dir or '', subdir)
  return sub if data_cfg.manual_dir and os.path.isdir(sub) else data_cfg.manual_dir


def queries_key(split: str) -> str:
  """What the query count of a task of ``split`` is: data.queries ('train'),
  data.eval_queries ('test'), the larger of the two ('val': it serves the training
  monitor and tuning by evaluation)."""
  return {'train': 'queries', 'test': 'eval_queries', 'val': 'max(queries, eval_queries)'}[split]


def required_pairs(data_cfg, split: str) -> int:
  """shots + queries ('train'), shots + eval_queries ('test') or shots + the larger of
  the two ('val')."""
  q = {
      'train': int(data_cfg.queries), 'test': int(data_cfg.eval_queries),
      'val': max(int(data_cfg.queries), int(data_cfg.eval_queries))
  }[split]
  return int(data_cfg.shots) + q


def check_task_sizes(taskset: tasks_lib.TaskSet, data_cfg, split: str,
                     source: Callable[[str], str]) -> tasks_lib.TaskSet:
  """Raises image_io.DataError for a task with too few pairs, unless reuse_pairs.

  Args:
    taskset: the loaded tasks.
    data_cfg: config.data (shots, queries, eval_queries, reuse_pairs).
    split: 'train', 'val' or 'test'.
    source: task name -> the file or folder to name in the message.
  """
  if data_cfg.get('reuse_pairs', False):
    return taskset
  need = required_pairs(data_cfg, split)
  q = queries_key(split)
  lower = ('data.shots/data.'
           + q if split != 'val' else 'data.shots/data.queries/data.eval_queries')
  for t, n in enumerate(taskset.task_sizes()):
    if n < need:
      name = taskset.names[t]
      raise image_io.DataError(
          source(name), f'task {name!r} ({split}) has {n} pairs, '
          f'fewer than shots + {q} = {need}; add pairs, lower '
          f'{lower} or set data.reuse_pairs=True')
  return taskset


def path_hash(path: str) -> str:
  """8 hex digits identifying an absolute path (for builder config names)."""
  return hashlib.sha1(os.path.abspath(path or '').encode()).hexdigest()[:8]


# ---------------------------------------------------------------------------
# Paired folders
# ---------------------------------------------------------------------------


def read_pair(image_path: str, label_path: str, num_classes: int, height: int,
              width: int) -> Tuple[np.ndarray, np.ndarray]:
  """Reads, checks and resizes one pair.

  Returns:
    (uint8 [height, width] ids, uint8 [height, width, 3] image).
  """
  image = image_io.read_rgb(image_path)
  ids = image_io.read_ids(label_path)
  image_io.check_same_size(image_path, image, label_path, ids)
  image_io.check_ids(label_path, ids, num_classes)
  return (image_io.resize_ids(ids.astype(np.uint8), height,
                              width), image_io.resize_image(image, height, width))


def task_pairs(task_dir: str) -> Dict[str, Tuple[str, str]]:
  """{name: (image path, label path)} of one task folder, checked."""
  img_dir = os.path.join(task_dir, 'images')
  lab_dir = os.path.join(task_dir, 'labels')
  for d in (img_dir, lab_dir):
    if not os.path.isdir(d):
      raise image_io.DataError(d, 'missing; a task folder holds images/ and labels/')
  images, labels = image_io.list_images(img_dir), image_io.list_images(lab_dir)
  for name, path in images.items():
    if name not in labels:
      raise image_io.DataError(path, f'has no label {os.path.join(lab_dir, name)}.png')
  for name, path in labels.items():
    if name not in images:
      raise image_io.DataError(path, f'has no image {os.path.join(img_dir, name)}.png')
  if not images:
    raise image_io.DataError(img_dir, 'has no images')
  return {n: (images[n], labels[n]) for n in sorted(images)}


def task_folders(root: str, folder: str) -> list:
  """Sorted task folder names of ROOT/<folder>; image_io.DataError if it is missing or empty."""
  return image_io.subfolders(
      os.path.join(root, folder),
      'ROOT/{train,test}/<task>/{images,labels}/ (and optionally ROOT/val/)', 'task folders')


def split_folder(split: str, val_fraction: float) -> str:
  """The folder of ROOT the tasks of ``split`` come from (``val_fraction`` 0: ROOT/val)."""
  return split if split == 'test' or not val_fraction else 'train'


def generate_tasks(root: str, split: str, num_classes: int, height: int, width: int,
                   val_fraction: float = 0.0) -> Iterator[task_builder.Task]:
  """Yields (task name, maps uint8 [n,H,W], images uint8 [n,H,W,3]) of builder split
  ``split``; ``val_fraction`` 0 reads ROOT/val/ for 'val', else holds out that fraction
  of ROOT/train/ (:func:`holdout.items`)."""
  folder, names = holdout.items(split, lambda f: task_folders(root, f), not val_fraction,
                                val_fraction, lambda f: os.path.join(root, f))
  split_dir = os.path.join(root, folder)
  for name in names:
    pairs = task_pairs(os.path.join(split_dir, name))
    maps, images = zip(
        *(read_pair(ip, lp, num_classes, height, width) for ip, lp in pairs.values()))
    yield name, np.stack(maps), np.stack(images)


@dataclasses.dataclass(eq=False)
class PairedFolderConfig(task_builder.TaskConfig):
  num_classes: int = 2
  val_fraction: float = 0.0  # 0: validation tasks from ROOT/val/


def make_builder_config(num_classes: int, height: int, width: int, root: str,
                        val_fraction: float = 0.1) -> PairedFolderConfig:
  """The config of ROOT; its ``val_fraction`` is 0 when ROOT/val/ exists."""
  val_folder = holdout.has_val_folder(root)
  name = (f'c{num_classes}_h{height}_w{width}_{path_hash(root)}_'
          f'{holdout.source_tag(val_folder, val_fraction)}')
  return PairedFolderConfig(name=name, description=f'Paired folder {root}', num_classes=num_classes,
                            height=height, width=width,
                            val_fraction=0.0 if val_folder else val_fraction)


class PairedFolderTasks(task_builder.ManualTaskBuilder):
  """Tasks from ROOT/{train,val,test}/<task>/{images,labels}/ (one task/example)."""

  MANUAL_DOWNLOAD_INSTRUCTIONS = ('Put ROOT/{train,test}/<task>/images/<name>.png and '
                                  'ROOT/{train,test}/<task>/labels/<name>.png in manual_dir.')

  def _tasks(self, manual_dir: str, split: str):
    cfg = self.builder_config
    return generate_tasks(manual_dir, split, cfg.num_classes, cfg.height, cfg.width,
                          cfg.val_fraction)


def prepare_data(data_cfg, workdir: str) -> Dict[str, tfds.core.DatasetBuilder]:
  """Prepares the paired folder of data_cfg; {split: builder}."""
  root = data_cfg.manual_dir
  config = make_builder_config(int(data_cfg.num_classes), int(data_cfg.image_height),
                               int(data_cfg.image_width), root, holdout.val_fraction(data_cfg))
  builder = prepare(PairedFolderTasks, config, default_data_dir(data_cfg, workdir), root,
                    'ROOT/{train,test}/<task>/{images,labels}/ (see '
                    'docs/datasets.md)')
  return {s: builder for s in holdout.SPLITS}


@registry.register('paired_folder')
def load_paired_folder(data_cfg, split: str, workdir: str) -> tasks_lib.TaskSet:
  """Registry loader for data.name = 'paired_folder'."""
  builder = prepare_data(data_cfg, workdir)[split]
  ts = tasks_lib.taskset_from_tfds(builder, split, int(data_cfg.num_classes))
  root = data_cfg.manual_dir or '<manual_dir>'
  folder = split_folder(split, builder.builder_config.val_fraction)
  return check_task_sizes(ts, data_cfg, split, lambda name: os.path.join(root, folder, name))
