"""The train, validation and test task sets of an experiment, checked against its config.

Validation and test tasks come in :func:`bil_jax.data.tasks.balanced_order`: where a split
has seen- and unseen-family tasks, they alternate, so the first N tasks (the monitor's, the
tuning's ``eval.num_val_tasks``, ``eval.num_test_tasks``) hold both conditions equally.

Only the final evaluation reads ``Splits.test``; everything that monitors, screens or
tunes reads ``Splits.val``. Training loads ``TRAINING_SPLITS`` only, so the test tasks
are not even read from disk before the final evaluation.
"""
from typing import NamedTuple, Optional, Sequence, Tuple

import ml_collections

from bil_jax import parallel
from bil_jax.data import registry
from bil_jax.data import tasks as tasks_lib

SPLITS = ("train", "val", "test")
TRAINING_SPLITS = ("train", "val")  # what pre-training, meta-training and tuning read


class Splits(NamedTuple):
  """The three TaskSets of ``config.data``: disjoint tasks, same image size and classes
  (a split that was not loaded is None)."""
  train: Optional[tasks_lib.TaskSet]
  val: Optional[tasks_lib.TaskSet]
  test: Optional[tasks_lib.TaskSet]


def image_hw(config: ml_collections.ConfigDict) -> Tuple[int, int]:
  """(H, W) of ``config.data``."""
  return (int(config.data.image_height), int(config.data.image_width))


def check_split(config: ml_collections.ConfigDict, ts: tasks_lib.TaskSet, split: str) -> None:
  """Raises a one-line ValueError naming ``split`` when its image size or class count
  differs from ``data.image_height/width`` or ``data.num_classes``."""
  if tuple(ts.image_hw) != image_hw(config):
    raise ValueError(f"data split {split!r} has images of size {tuple(ts.image_hw)} but "
                     f"data.image_height/width say {image_hw(config)}")
  if ts.num_classes != config.data.num_classes:
    raise ValueError(f"data split {split!r} has {ts.num_classes} classes but "
                     f"data.num_classes={config.data.num_classes}")


def load_data(config: ml_collections.ConfigDict, workdir: str,
              splits: Sequence[str] = SPLITS) -> Splits:
  """Splits(train, val, test) TaskSets of ``config.data``, each checked by :func:`check_split`;
  val and test in :func:`bil_jax.data.tasks.balanced_order`.

  Only the splits named in ``splits`` are read; the others are None (training passes
  ``TRAINING_SPLITS``). With several processes, process 0 loads (and builds) the data
  first and the others read it after.
  """
  unknown = [s for s in splits if s not in SPLITS]
  if unknown:
    raise ValueError(f"unknown data split {unknown[0]!r}; splits are {SPLITS}")

  def load():
    return Splits(
        *(registry.load_tasks(config.data, s, workdir) if s in splits else None for s in SPLITS))

  # Loading may build the dataset into a shared data_dir: process 0 builds, then the
  # others read (two builders renaming into one directory at once fail).
  data = parallel.main_process_first(load, f"preparing the {config.data.name!r} dataset")
  for split, ts in zip(SPLITS, data):
    if ts is not None:
      check_split(config, ts, split)
  return data._replace(**{
      s: tasks_lib.balanced(getattr(data, s))
      for s in ("val", "test")
      if getattr(data, s) is not None
  })
