"""Helpers shared by the data-layer tests (test_data.py, test_episodes.py, test_augment.py).

A small synthetic dataset config and its built splits (a fixture), an augmentation config,
and a TaskSet whose constant images encode (task, pair) so that a sampled image tells
where it came from.
"""
import ml_collections
import numpy as np
import pytest

from bil_jax import config_lib
from bil_jax.data import synthetic
from bil_jax.data import tasks

C = 8
HW = (32, 32)


def small_data_cfg(data_dir: str) -> ml_collections.ConfigDict:
  cfg = config_lib.base_config()
  d = cfg.data
  d.data_dir = data_dir
  d.num_classes = C
  d.image_height, d.image_width = HW
  d.num_train_tasks = 8
  d.num_val_tasks = 3
  d.num_test_tasks = 4
  d.pairs_per_task = 12
  return d


@pytest.fixture(scope='module')
def built(tmp_path_factory):
  """The small synthetic dataset, built twice in different directories."""
  out = []
  for k in range(2):
    d = small_data_cfg(str(tmp_path_factory.mktemp(f'tfds{k}')))
    out.append({s: synthetic.load_synthetic(d, s, workdir='/nonexistent') for s in synthetic.SPLITS})
  return out


def aug_cfg(flip=True, crop=0.9, rot=10.0, flip_ref=True):
  return ml_collections.ConfigDict(
      dict(flip=flip, crop_fraction=crop, max_rotation_deg=rot, flip_reference=flip_ref))


def coded_taskset(sizes, hw=(8, 8)) -> tasks.TaskSet:
  """Each pair's image is one constant colour encoding (task, pair index).

  Constant images stay constant under flip/crop/rotation, so the pair a
  sampled image came from can be read back from any of its pixels.
  """
  items = []
  for t, n in enumerate(sizes):
    imgs = np.zeros((n,) + hw + (3,), np.uint8)
    imgs[..., 0] = t * 10
    imgs[..., 1] = np.arange(n)[:, None, None] * 5
    items.append((f'task{t}', np.full((n,) + hw, t % 2, np.uint8), imgs))
  return tasks.from_tasks(items, num_classes=2)


def decode(images: np.ndarray):
  """float [..., H, W, 3] constant images -> (task, pair) int arrays [...]."""
  px = np.rint((images[..., 0, 0, :] + 1.0) * 127.5).astype(int)
  return px[..., 0] // 10, px[..., 1] // 5
