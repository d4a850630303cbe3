"""The train, validation and test task sets of an experiment, checked against its config.

Only the final evaluation reads ``Splits.test``; everything that monitors, screens or
tunes reads ``Splits.val``.
"""
from typing import NamedTuple, Tuple

import ml_collections

from bil_jax import parallel
from bil_jax.data import registry
from bil_jax.data import tasks as tasks_lib

SPLITS = ("train", "val", "test")


class Splits(NamedTuple):
  """The three TaskSets of ``config.data``: disjoint tasks, same image size and classes."""
  train: tasks_lib.TaskSet
  val: tasks_lib.TaskSet
  test: tasks_lib.TaskSet


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


def load_data(config: ml_collections.ConfigDict, workdir: str) -> Splits:
  """Splits(train, val, test) TaskSets of ``config.data``, each checked by :func:`check_split`.

  With several processes, process 0 loads (and builds) the data first and the others
  read it after.
  """
  # Loading may build the dataset into a shared data_dir: process 0 builds, then the
  # others read (two builders renaming into one directory at once fail).
  splits = parallel.main_process_first(
      lambda: Splits(*(registry.load_tasks(config.data, s, workdir) for s in SPLITS)),
      f"preparing the {config.data.name!r} dataset")
  for split, ts in zip(SPLITS, splits):
    check_split(config, ts, split)
  return splits
