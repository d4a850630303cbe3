"""TensorFlow out of the run: clu's metric writers without importing it.

Nothing at run time needs TensorFlow: prepared datasets are read from ArrayRecord files
(``tfds`` data sources) and summaries are written by tensorboard alone. Only preparing a
dataset (TFDS's writers) imports it. What stands in the way is clu: ``clu.metric_writers``
imports its TensorFlow summary writer when the package is imported, and
``clu.periodic_actions`` imports that package. Importing TensorFlow costs about 5 s of CPU
and half a gigabyte per process (every start and resume of a run), and on a machine
without it (a JAX GPU image, a TPU VM) the import fails. :func:`install` (run by
``import bil_jax``) puts a finder in front of ``sys.meta_path`` that answers for that one
module, ``clu.metric_writers.summary_writer``, unless TensorFlow is already imported: it
then serves a module whose ``SummaryWriter`` builds a
:class:`bil_jax.summary.EventFileWriter`, which writes the same TensorBoard event files
through tensorboard alone. clu's ``create_default_writer`` then works unchanged. Where
TensorFlow is already imported (a user's program that uses it), the finder steps aside and
clu loads its own module.
"""
import importlib.abc
import importlib.machinery
import sys

_TARGET = "clu.metric_writers.summary_writer"


def tensorflow_importable() -> bool:
  """Whether ``import tensorflow`` succeeds (imports it where it does)."""
  try:
    import tensorflow  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    return False
  return True


class SummaryWriter:
  """clu's ``SummaryWriter`` where TensorFlow is missing: ``SummaryWriter(logdir)`` returns
  a :class:`bil_jax.summary.EventFileWriter` writing event files into ``logdir``."""

  def __new__(cls, logdir: str):
    from bil_jax import summary  # pylint: disable=g-import-not-at-top
    return summary.EventFileWriter(logdir)


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
  """Serves ``clu.metric_writers.summary_writer`` unless TensorFlow is already imported."""

  bil_jax_tf_optional = True  # marks the finder across reloads of this module

  def find_spec(self, name, path=None, target=None):
    del path, target
    if name != _TARGET or "tensorflow" in sys.modules:
      return None
    return importlib.machinery.ModuleSpec(name, self)

  def create_module(self, spec):
    return None  # the default module object

  def exec_module(self, module):
    module.__doc__ = "clu's SummaryWriter without TensorFlow (served by bil_jax.tf_optional)."
    module.SummaryWriter = SummaryWriter


def install() -> None:
  """Puts the finder first on ``sys.meta_path`` (once per process)."""
  if not any(getattr(f, "bil_jax_tf_optional", False) for f in sys.meta_path):
    sys.meta_path.insert(0, _Finder())
