"""Dataset registry: ``data.name`` -> loader returning a TaskSet.

A loader is ``fn(data_cfg, split, workdir) -> TaskSet`` with split 'train',
'val' or 'test' (disjoint tasks; only the final evaluation reads 'test').
Built-in loaders live in modules imported on first use (so that importing the
registry does not import TensorFlow Datasets); a new dataset registers itself
with ``@register('name')`` and, if it is built in, is added to
``_BUILTIN_MODULES``.
"""
import importlib
from typing import Callable, Dict

Loader = Callable[..., 'TaskSet']  # (data_cfg, split, workdir) -> TaskSet

_LOADERS: Dict[str, Loader] = {}
# name -> module whose import registers it.
_BUILTIN_MODULES: Dict[str, str] = {
    'synthetic': 'bil_jax.data.synthetic',
    'faceforensics': 'bil_jax.data.faceforensics',
    'bdd100k': 'bil_jax.data.bdd100k',
    'camvid': 'bil_jax.data.camvid',
    'bdd_camvid': 'bil_jax.data.camvid',
    'paired_folder': 'bil_jax.data.paired_folder',
}
_SPLITS = ('train', 'val', 'test')


def register(name: str) -> Callable[[Loader], Loader]:
  """Decorator registering ``fn(data_cfg, split, workdir) -> TaskSet``."""

  def decorator(fn: Loader) -> Loader:
    old = _LOADERS.get(name)
    if old is not None and (old.__module__, old.__qualname__) != (
        fn.__module__, fn.__qualname__):  # a module reload may re-register
      raise ValueError(f'dataset {name!r} is already registered by '
                       f'{old.__module__}.{old.__qualname__}')
    _LOADERS[name] = fn
    return fn

  return decorator


def known_names():
  """Sorted names of registered and built-in datasets."""
  return sorted(set(_LOADERS) | set(_BUILTIN_MODULES))


def get_loader(name: str) -> Loader:
  """The loader registered as ``name`` (importing built-ins on demand)."""
  if name not in _LOADERS and name in _BUILTIN_MODULES:
    importlib.import_module(_BUILTIN_MODULES[name])
  if name not in _LOADERS:
    raise ValueError(f'Unknown data.name {name!r}; known datasets: '
                     f'{", ".join(known_names())}')
  return _LOADERS[name]


def load_tasks(data_cfg, split: str, workdir: str):
  """Loads split 'train', 'val' or 'test' of dataset ``data_cfg.name`` as a TaskSet."""
  if split not in _SPLITS:
    raise ValueError(f'split must be one of {_SPLITS}, got {split!r}')
  return get_loader(data_cfg.name)(data_cfg, split, workdir)
