"""Task collections: every dataset becomes a ``TaskSet`` in host memory.

A task (scene / identity / video clip) is a set of segmentation-map / image
pairs.  All pairs of all tasks of a split are stored in two flat arrays and
task ``t`` owns rows ``offsets[t]:offsets[t + 1]``.

Every task-level TFDS builder (synthetic scenes, and later FaceForensics,
BDD100K, CamVid, paired folders) uses :func:`TASK_FEATURES`: one TFDS example
is one whole task.  :func:`taskset_from_tfds` reads a prepared builder's split.
"""
import dataclasses
import re
from typing import Iterable, List, Sequence, Tuple

import numpy as np


@dataclasses.dataclass(frozen=True, eq=False)  # arrays: compare by identity
class TaskSet:
  """All pairs of the tasks of one split.

  Attributes:
    maps: uint8 [N, H, W] class ids in [0, num_classes).
    images: uint8 [N, H, W, 3].
    offsets: int64 [T + 1]; task t owns rows offsets[t]:offsets[t + 1].
    names: T task names (str).
    num_classes: C.
  """
  maps: np.ndarray
  images: np.ndarray
  offsets: np.ndarray
  names: tuple
  num_classes: int

  def __post_init__(self):
    n = self.maps.shape[0]
    if self.maps.ndim != 3 or self.images.shape != self.maps.shape + (3,):
      raise ValueError(f'TaskSet: maps {self.maps.shape} and images '
                       f'{self.images.shape} must be [N,H,W] and [N,H,W,3]')
    if self.maps.dtype != np.uint8 or self.images.dtype != np.uint8:
      raise ValueError(f'TaskSet: maps/images must be uint8, got '
                       f'{self.maps.dtype}/{self.images.dtype}')
    off = self.offsets
    if (off.ndim != 1 or off[0] != 0 or off[-1] != n or np.any(np.diff(off) < 0) or
        len(self.names) != off.shape[0] - 1):
      raise ValueError('TaskSet: offsets must rise from 0 to N with one entry '
                       'per task plus one')

  @property
  def num_tasks(self) -> int:
    return len(self.names)

  @property
  def num_pairs(self) -> int:
    return int(self.maps.shape[0])

  @property
  def image_hw(self) -> Tuple[int, int]:
    return int(self.maps.shape[1]), int(self.maps.shape[2])

  def task_size(self, t: int) -> int:
    return int(self.offsets[t + 1] - self.offsets[t])

  def task_sizes(self) -> np.ndarray:
    """int64 [T] number of pairs per task."""
    return np.diff(self.offsets)

  def task_slice(self, t: int) -> slice:
    return slice(int(self.offsets[t]), int(self.offsets[t + 1]))

  def task_maps(self, t: int) -> np.ndarray:
    """uint8 [n_t, H, W]."""
    return self.maps[self.task_slice(t)]

  def task_images(self, t: int) -> np.ndarray:
    """uint8 [n_t, H, W, 3]."""
    return self.images[self.task_slice(t)]

  def subset(self, task_indices: Sequence[int]) -> 'TaskSet':
    """A TaskSet with only the given tasks, in the given order."""
    return from_tasks(
        ((self.names[t], self.task_maps(t), self.task_images(t)) for t in task_indices),
        self.num_classes)


_CONDITION = re.compile(r'^[a-z]+_(seen|unseen)_\d+$')


def task_condition(name: str) -> str:
  """The test condition of a task name: 'seen', 'unseen' or 'all'.

  Synthetic val/test scenes with families are named '{split}_seen_{i:05d}' (a scene
  of a training family) or '{split}_unseen_{i:05d}' (a family never seen in
  training); every other name (no families, other datasets) is 'all'.
  """
  m = _CONDITION.match(str(name))
  return m.group(1) if m else 'all'


def balanced_order(names: Sequence[str]) -> List[int]:
  """Task indices with the conditions (:func:`task_condition`) taken in turn: the first
  task of each condition, then the second of each, ... (conditions in order of first
  appearance, each keeping its own order; a condition that runs out is skipped).

  So the first N tasks of a split hold its conditions equally (up to one), whatever N.
  A split of one condition keeps its order.
  """
  by_condition = {}
  for i, name in enumerate(names):
    by_condition.setdefault(task_condition(name), []).append(i)
  queues = list(by_condition.values())
  return [q[k] for k in range(max(map(len, queues), default=0)) for q in queues if k < len(q)]


def balanced(ts: 'TaskSet') -> 'TaskSet':
  """``ts`` with its tasks in :func:`balanced_order` (``ts`` itself if already so)."""
  order = balanced_order(ts.names)
  return ts if order == list(range(ts.num_tasks)) else ts.subset(order)


def from_tasks(tasks: Iterable[Tuple[str, np.ndarray, np.ndarray]], num_classes: int) -> TaskSet:
  """Builds a TaskSet from (name, maps [n,H,W], images [n,H,W,3]) triples."""
  names, maps, images = [], [], []
  for name, m, im in tasks:
    names.append(str(name))
    maps.append(np.asarray(m, np.uint8))
    images.append(np.asarray(im, np.uint8))
  if not names:
    raise ValueError('TaskSet needs at least one task')
  sizes = [m.shape[0] for m in maps]
  offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
  return TaskSet(maps=np.concatenate(maps), images=np.concatenate(images), offsets=offsets,
                 names=tuple(names), num_classes=int(num_classes))


def TASK_FEATURES(height: int, width: int):  # pylint: disable=invalid-name
  """The feature spec of every task-level TFDS builder: one example = one task.

  Args:
    height, width: image size H, W.

  Returns:
    tfds.features.FeaturesDict with 'name' (Text), 'maps' (uint8 [n, H, W]) and
    'images' (uint8 [n, H, W, 3]), arrays zlib-compressed.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  return tfds.features.FeaturesDict({
      'name':
          tfds.features.Text(),
      'maps':
          tfds.features.Tensor(shape=(None, height, width), dtype=np.uint8, encoding='zlib'),
      'images':
          tfds.features.Tensor(shape=(None, height, width, 3), dtype=np.uint8, encoding='zlib'),
  })


def _iter_examples(builder, split: str):
  """Yields decoded numpy examples of a prepared builder's split.

  ArrayRecord datasets are read with ``as_data_source`` (no TensorFlow import,
  which takes seconds); other formats through ``tfds.as_numpy(as_dataset)``, which needs
  TensorFlow: without it, a one-line ValueError naming the dataset and its folder.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  fmt = getattr(builder.info, 'file_format', None)
  if fmt is not None and 'array_record' in str(getattr(fmt, 'value', fmt)):
    source = builder.as_data_source(split=split)
    for i in range(len(source)):
      yield source[i]
  else:
    from bil_jax import tf_optional  # pylint: disable=g-import-not-at-top
    if not tf_optional.tensorflow_importable():
      raise ValueError(
          f'{builder.data_dir}: dataset {builder.name!r} is stored as '
          f'{getattr(fmt, "value", fmt)} files, which only TensorFlow reads: install '
          'tensorflow-cpu here, or prepare it elsewhere (as array_record, the default) and '
          'point data.data_dir at it')
    yield from tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False))


def taskset_from_tfds(builder, split: str, num_classes: int) -> TaskSet:
  """Reads a prepared task-level builder's split into a TaskSet.

  Args:
    builder: a prepared tfds builder whose features are TASK_FEATURES.
    split: split name, e.g. 'train' or 'test'.
    num_classes: C, recorded in the TaskSet; map ids must be < C.

  Returns:
    TaskSet with tasks sorted by name (deterministic whatever the file order).
  """
  tasks = []
  for ex in _iter_examples(builder, split):
    name = ex['name']
    name = name.decode('utf-8') if isinstance(name, bytes) else str(name)
    tasks.append((name, np.asarray(ex['maps']), np.asarray(ex['images'])))
  tasks.sort(key=lambda x: x[0])
  ts = from_tasks(tasks, num_classes)
  if ts.maps.max(initial=0) >= num_classes:
    raise ValueError(f'{builder.name}/{split}: class id {ts.maps.max()} >= '
                     f'num_classes {num_classes}')
  return ts
