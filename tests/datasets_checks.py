"""Helpers shared by the dataset-builder tests (test_datasets*.py, test_landmarks.py).

A data config, a registry load with its printed summary captured, the colour agreement
of maps and images, and the one-line error check.
"""
import contextlib
import io
import os

import ml_collections
import numpy as np

from bil_jax import config_lib
from bil_jax.data import image_io
from bil_jax.data import registry
from tests import fixtures_datasets as fx

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DataError = image_io.DataError


def data_cfg(**kw) -> ml_collections.ConfigDict:
  d = config_lib.base_config().data
  for k, v in kw.items():
    d[k] = v
  return d


def load(d, split):
  """registry.load_tasks with its stdout captured: (TaskSet, printed text)."""
  buf = io.StringIO()
  with contextlib.redirect_stdout(buf):
    ts = registry.load_tasks(d, split, workdir='/nonexistent')
  return ts, buf.getvalue()


def agreement(maps, images, colours):
  """Fraction of pixels whose image colour is nearest to their class colour.

  maps: [n, H, W] ids; images [n, H, W, 3]; colours [C, 3].
  """
  d = np.abs(images[..., None, :].astype(int) - colours.astype(int)).sum(-1)
  return float(np.mean(np.argmin(d, -1) == maps))


def assert_one_line_naming(err, path):
  msg = str(err.value)
  assert '\n' not in msg, msg
  assert str(path) in msg, (path, msg)


def write_png(path, array):
  return fx.save(str(path), np.asarray(array, np.uint8))
