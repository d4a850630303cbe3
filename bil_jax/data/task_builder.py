"""The base of every task-level TFDS builder: one example = one whole task.

:class:`TaskConfig` holds the image size H x W of the tasks; :class:`TaskBuilder`
gives the version, the dataset info (the builder module's one-line summary and
:func:`bil_jax.data.tasks.TASK_FEATURES`) and the code path; :func:`examples`
turns (name, maps, images) tasks into TFDS (key, example) pairs.
:class:`ManualTaskBuilder` is a builder that reads ``manual_dir``: a subclass gives
only the tasks of a split (``_tasks``), and the splits where they are not
:data:`bil_jax.data.holdout.SPLITS`.  These bases are abstract, so TFDS does not
register them.
"""
import abc
import dataclasses
import inspect
from typing import Iterable, Iterator, Optional, Sequence, Tuple

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from bil_jax.data import holdout
from bil_jax.data import tasks as tasks_lib

Task = Tuple[str, np.ndarray, np.ndarray]  # name, maps [n,H,W], images [n,H,W,3]


@dataclasses.dataclass(eq=False)
class TaskConfig(tfds.core.BuilderConfig):
  """A builder config whose tasks have images of height x width pixels."""
  height: int = 128
  width: int = 128


def sized_config(cls, what: str, height: int, width: int, tag: str, **fields) -> TaskConfig:
  """A ``cls`` (a TaskConfig subclass) named 'h<H>_w<W>_<tag>' and described '<what> <name>',
  with ``fields`` set."""
  name = f'h{height}_w{width}_{tag}'
  return cls(name=name, description=f'{what} {name}', height=height, width=width, **fields)


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
    return self.dataset_info_from_configs(description=module_summary(type(self)),
                                          features=tasks_lib.TASK_FEATURES(height, width),
                                          homepage=self.HOMEPAGE)


def task_example(name: str, maps: np.ndarray, images: np.ndarray):
  """(key, example) of one task for ``_generate_examples``."""
  return name, {
      'name': name, 'maps': np.asarray(maps, np.uint8), 'images': np.asarray(images, np.uint8)
  }


def examples(tasks: Iterable[Task]) -> Iterator:
  """(key, example) of each (name, maps uint8 [n,H,W], images uint8 [n,H,W,3])."""
  for name, maps, images in tasks:
    yield task_example(name, maps, images)


class ManualTaskBuilder(TaskBuilder):
  """Base of the task-level builders that read ``manual_dir``.

  Subclasses define MANUAL_DOWNLOAD_INSTRUCTIONS, :meth:`_tasks` (and HOMEPAGE, and
  :meth:`_splits` where the splits are not :data:`bil_jax.data.holdout.SPLITS`).
  """

  def _splits(self, manual_dir: str) -> Sequence[str]:
    """The splits to build from ``manual_dir``; raises image_io.DataError for bad input."""
    del manual_dir
    return holdout.SPLITS

  @abc.abstractmethod
  def _tasks(self, manual_dir: str, split: str) -> Iterator[Task]:
    """(name, maps uint8 [n,H,W], images uint8 [n,H,W,3]) of each task of ``split``."""

  def _split_generators(self, dl_manager):
    manual = str(dl_manager.manual_dir)
    return {s: self._generate_examples(manual, s) for s in self._splits(manual)}

  def _generate_examples(self, manual_dir: str, split: str):
    yield from examples(self._tasks(manual_dir, split))
