"""The base of every task-level TFDS builder: one example = one whole task.

:class:`TaskConfig` holds the image size H x W of the tasks; :class:`TaskBuilder`
gives the version, the dataset info (the builder module's one-line summary and
:func:`bil_jax.data.tasks.TASK_FEATURES`) and the code path; :func:`examples`
turns (name, maps, images) tasks into TFDS (key, example) pairs.  Subclasses
define ``_split_generators`` and ``_generate_examples``, so these bases stay
abstract and TFDS does not register them.
"""
import dataclasses
import inspect
from typing import Iterable, Iterator, Optional, Tuple

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from bil_jax.data import tasks as tasks_lib

Task = Tuple[str, np.ndarray, np.ndarray]  # name, maps [n,H,W], images [n,H,W,3]


@dataclasses.dataclass(eq=False)
class TaskConfig(tfds.core.BuilderConfig):
  """A builder config whose tasks have images of height x width pixels."""
  height: int = 128
  width: int = 128


def module_summary(cls) -> str:
  """The first line of the docstring of the module that defines ``cls``."""
  return inspect.getmodule(cls).__doc__.split('\n')[0]


class TaskBuilder(tfds.core.GeneratorBasedBuilder):
  """Base of the task-level builders (features: TASK_FEATURES at image_hw())."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  HOMEPAGE: Optional[str] = None

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls):  # pylint: disable=no-self-argument
    # The base implementation needs the `importlib_resources` backport, which
    # TFDS 4.9.10 does not declare as a dependency; the file path is enough.
    return epath.Path(inspect.getfile(cls))

  def image_hw(self) -> Tuple[int, int]:
    """(H, W) of the tasks' images; from the TaskConfig by default."""
    return self.builder_config.height, self.builder_config.width

  def _info(self) -> tfds.core.DatasetInfo:
    height, width = self.image_hw()
    return self.dataset_info_from_configs(
        description=module_summary(type(self)),
        features=tasks_lib.TASK_FEATURES(height, width),
        homepage=self.HOMEPAGE)


def task_example(name: str, maps: np.ndarray, images: np.ndarray):
  """(key, example) of one task for ``_generate_examples``."""
  return name, {'name': name, 'maps': np.asarray(maps, np.uint8),
                'images': np.asarray(images, np.uint8)}


def examples(tasks: Iterable[Task]) -> Iterator:
  """(key, example) of each (name, maps uint8 [n,H,W], images uint8 [n,H,W,3])."""
  for name, maps, images in tasks:
    yield task_example(name, maps, images)
