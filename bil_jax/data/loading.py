"""The train and test task sets of an experiment, checked against its config."""
from typing import Tuple

import ml_collections

from bil_jax import parallel
from bil_jax.data import registry
from bil_jax.data import tasks as tasks_lib


def image_hw(config: ml_collections.ConfigDict) -> Tuple[int, int]:
  """(H, W) of ``config.data``."""
  return (int(config.data.image_height), int(config.data.image_width))


def load_data(config: ml_collections.ConfigDict,
              workdir: str) -> Tuple[tasks_lib.TaskSet, tasks_lib.TaskSet]:
  """(train TaskSet, test TaskSet) of ``config.data``.

  With several processes, process 0 loads (and builds) the data first and the others
  read it after. Raises a one-line ValueError naming the split when its image size or class count
  differs from ``data.image_height/width`` or ``data.num_classes``.
  """
  # Loading may build the dataset into a shared data_dir: process 0 builds, then the
  # others read (two builders renaming into one directory at once fail).
  train_tasks, test_tasks = parallel.main_process_first(
      lambda: (registry.load_tasks(config.data, "train", workdir),
               registry.load_tasks(config.data, "test", workdir)),
      f"preparing the {config.data.name!r} dataset")
  for ts, split in ((train_tasks, "train"), (test_tasks, "test")):
    if tuple(ts.image_hw) != image_hw(config):
      raise ValueError(f"data split {split!r} has images of size {tuple(ts.image_hw)} but "
                       f"data.image_height/width say {image_hw(config)}")
    if ts.num_classes != config.data.num_classes:
      raise ValueError(f"data split {split!r} has {ts.num_classes} classes but "
                       f"data.num_classes={config.data.num_classes}")
  return train_tasks, test_tasks
