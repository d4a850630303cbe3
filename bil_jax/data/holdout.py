"""The validation split of the datasets read from folders: a ``val/`` folder, or else a
fixed fraction of the training items, disjoint from those trained on.

An item is what a dataset's split folder lists: a task folder (paired folders), a video
(FaceForensics: all its clips go together) or a pair (BDD100K). Without a validation
folder, of the G training items sorted by name, k = max(1, round(data.val_fraction * G))
evenly spaced ones are held out: item floor((j + 1/2) * G / k) for j = 0..k-1. No random
draw is involved, so every seed and every run holds out the same items; they are
generated as validation tasks and left out of 'train'.

Builders record :func:`source_tag` in their config name, so a prepared copy made with
another fraction, or before a ``val/`` folder existed, is not reused.
"""
import os
from typing import Callable, List, Sequence, Tuple

from bil_jax.data import image_io

SPLITS = ('train', 'val', 'test')


def val_fraction(data_cfg) -> float:
  """``data.val_fraction``; a one-line ValueError unless 0 < fraction < 1."""
  fraction = float(data_cfg.get('val_fraction', 0.1))
  if not 0.0 < fraction < 1.0:
    raise ValueError(f'data.val_fraction must be in (0, 1), got {fraction}')
  return fraction


def held_out(names: Sequence[str], fraction: float, where: str) -> List[str]:
  """The held-out items of ``names``: k evenly spaced of the G sorted unique names.

  Args:
    names: the training items.
    fraction: in (0, 1); k = max(1, round(fraction * G)).
    where: the folder listed, for the error message.

  Raises:
    DataError: k would leave no training item (G < 2, or fraction too high).
  """
  names = sorted(set(names))
  g = len(names)
  k = max(1, int(round(fraction * g)))
  if k >= g:
    raise image_io.DataError(
        where, f'has {g} training items; holding out '
        f'data.val_fraction={fraction} of them for validation '
        'leaves none to train on: add items, lower the fraction '
        'or add a val/ folder')
  return [names[int((j + 0.5) * g / k)] for j in range(k)]


def source_tag(has_val_folder: bool, fraction: float) -> str:
  """The part of a builder config name that says where validation tasks come from."""
  return 'vdir' if has_val_folder else 'v' + f'{fraction:g}'.replace('.', 'p')


def has_val_folder(root: str) -> bool:
  """Whether ROOT/val is a folder (``root`` may be empty: no)."""
  return bool(root) and os.path.isdir(os.path.join(root, 'val'))


def items(split: str, list_items: Callable[[str], Sequence[str]], val_folder: bool, fraction: float,
          where: Callable[[str], str]) -> Tuple[str, List[str]]:
  """The folder the items of builder split ``split`` are read from, and those items.

  Args:
    split: 'train', 'val' or 'test'.
    list_items: folder ('train', 'val' or 'test') -> the items it holds.
    val_folder: whether a 'val' folder exists; then every split reads its own folder.
    fraction: ``data.val_fraction``, used when there is no 'val' folder.
    where: folder -> its path, for error messages.

  Returns:
    (folder, sorted items): without a 'val' folder, 'val' reads the held-out items of
    'train' and 'train' the others.
  """
  if split not in SPLITS:
    raise ValueError(f'split must be one of {SPLITS}, got {split!r}')
  if split == 'test' or val_folder:
    return split, sorted(list_items(split))
  names = sorted(list_items('train'))
  val = set(held_out(names, fraction, where('train')))
  return 'train', [n for n in names if (n in val) == (split == 'val')]
