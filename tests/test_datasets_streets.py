"""Tests of the BDD100K and CamVid builders and of the prepare CLI.

Tiny fixtures in the real layouts are written by tests/fixtures_datasets.py into temporary
folders, built with TFDS and read back through the dataset registry, as training reads
them; data_prep/prepare.py prepares them from the command line.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

from bil_jax.data import bdd100k
from bil_jax.data import camvid
from bil_jax.data import episodes
from bil_jax.data import image_io
from tests import fixtures_datasets as fx
from tests.datasets_checks import REPO, agreement, data_cfg, load, write_png

# ---------------------------------------------------------------------------
# BDD100K and CamVid
# ---------------------------------------------------------------------------


@pytest.fixture(scope='module')
def streets(tmp_path_factory):
  root = tmp_path_factory.mktemp('streets')
  names = fx.write_bdd100k(str(root / 'bdd100k'))
  fx.write_camvid(str(root / 'camvid'))
  d = data_cfg(name='bdd_camvid', num_classes=20, image_height=16, image_width=32,
               manual_dir=str(root), shots=1, queries=5, eval_queries=5, reuse_pairs=True,
               data_dir=str(tmp_path_factory.mktemp('streets_tfds')))
  (train, _), (test, out) = load(d, 'train'), load(d, 'test')
  val, _ = load(d, 'val')
  return {
      'train': train, 'val': val, 'test': test, 'out': out, 'names': names, 'root': root, 'cfg': d
  }


def test_bdd100k_pairs_are_one_shot_tasks(streets):
  tr, bdd_train = streets['train'], streets['names']['train']
  # data.val_fraction=0.1 of 3 pairs: 1 held out, the middle one by sorted name.
  assert tr.names == (bdd_train[0], bdd_train[2])
  assert streets['val'].names == (bdd_train[1],)
  np.testing.assert_array_equal(tr.task_sizes(), [1, 1])
  assert tr.maps.shape == (2, 16, 32) and tr.images.shape == (2, 16, 32, 3)
  assert tr.num_classes == 20 and tr.maps.max() <= 19
  assert 19 in np.unique(tr.maps)  # void (255) -> 19
  va = streets['val']
  assert agreement(np.concatenate([tr.maps, va.maps]), np.concatenate([tr.images, va.images]),
                   fx.class_colour(np.arange(20))) > 0.85
  # reuse_pairs fills support + query sets from the single pair.
  ep = episodes.sample_episode(tr, 0, 1, 5, np.random.default_rng(0), streets['cfg'].augment,
                               reuse_pairs=True)
  assert ep['query']['map'].shape == (5, 16, 32)


def test_bdd100k_alone_uses_val_as_test(streets):
  d = streets['cfg'].copy_and_resolve_references()
  d.name = 'bdd100k'
  ts, _ = load(d, 'test')
  assert ts.names == tuple(streets['names']['val'])


def test_camvid_clips(streets):
  te = streets['test']
  # 0001TP: 12 frames -> 1 clip (2 dropped); Seq05VD: 10 frames -> 1 clip.
  assert te.names == ('0001TP_000', 'Seq05VD_000')
  np.testing.assert_array_equal(te.task_sizes(), [10, 10])
  assert te.maps.shape == (20, 16, 32) and te.num_classes == 20
  assert te.maps.max() <= 19
  assert 'dropped 2 frames at sequence ends' in streets['out']
  assert agreement(te.maps, te.images, fx.class_colour(np.arange(20))) > 0.9
  ep = episodes.sample_episode(te, 1, 1, 5, np.random.default_rng(0), None, augment_query=False)
  assert ep['support']['map'].shape == (1, 16, 32)
  assert ep['query']['map'].shape == (5, 16, 32)


def test_camvid_mapping_covers_every_class():
  names = [n for n, _, _ in camvid.CAMVID_CLASSES]
  colours = [c for _, c, _ in camvid.CAMVID_CLASSES]
  assert len(names) == 32 and len(set(names)) == 32  # 31 classes + Void
  assert len(set(colours)) == 32
  assert set(camvid.CAMVID_TO_BDD) == set(names)
  assert all(0 <= b < bdd100k.NUM_CLASSES for b in camvid.CAMVID_TO_BDD.values())
  assert camvid.CAMVID_TO_BDD['Void'] == bdd100k.VOID
  for n, b in [('Road', 'road'), ('Sky', 'sky'), ('Car', 'car'), ('Pedestrian', 'person'),
               ('Tree', 'vegetation'), ('Building', 'building'), ('Sidewalk', 'sidewalk'),
               ('Column_Pole', 'pole'), ('TrafficLight', 'traffic light')]:
    assert bdd100k.BDD_CLASSES[camvid.CAMVID_TO_BDD[n]] == b
  # The palette decodes every colour to its mapped class.
  rgb = np.array(colours, np.uint8)[None]
  ids = image_io.colours_to_ids('x.png', rgb, camvid.PALETTE, 'CamVid')
  np.testing.assert_array_equal(ids[0], [camvid.CAMVID_TO_BDD[n] for n in names])


def test_resize_center_crop_geometry():
  """720x1280 -> cover 144x256 -> rows 8..135; the map follows the image."""
  ids = np.zeros((720, 1280), np.uint8)
  ids[:45] = 1  # first 45 rows -> 9 rows at 144 -> 1 row after the crop
  ids[:, 640:] += 2
  img = fx.class_colour(ids)
  out_img, out_ids = image_io.resize_center_crop(img, ids, 128, 256)
  assert out_img.shape == (128, 256, 3) and out_ids.shape == (128, 256)
  assert np.all(out_ids[0, :128] == 1) and np.all(out_ids[1:, :128] == 0)
  assert np.all(out_ids[5:, 128:] == 2)
  assert agreement(out_ids[None], out_img[None], fx.class_colour(np.arange(4))) > 0.98


def test_bdd_camvid_loads_by_parts(tmp_path, streets):
  """bdd100k_dir / camvid_dir point at the two datasets separately."""
  d = streets['cfg'].copy_and_resolve_references()
  d.manual_dir = ''
  d.bdd100k_dir = str(streets['root'] / 'bdd100k')
  d.camvid_dir = str(streets['root'] / 'camvid')
  d.data_dir = str(tmp_path)
  ts, _ = load(d, 'test')
  assert ts.num_tasks == 2


# ---------------------------------------------------------------------------
# The prepare CLI
# ---------------------------------------------------------------------------


def run_cli(*args):
  env = dict(os.environ, PYTHONPATH=REPO)
  return subprocess.run(
      [sys.executable, os.path.join(REPO, 'data_prep', 'prepare.py'), *args], capture_output=True,
      text=True, env=env, timeout=120, check=False)


def test_prepare_cli(tmp_path):
  fx.write_bdd100k(str(tmp_path / 'm' / 'bdd100k'), {'train': 2})
  fx.write_camvid(str(tmp_path / 'm' / 'camvid'), {'0006R0': 10})
  size = ['--config.data.image_height=16', '--config.data.image_width=32']
  res = run_cli(f'--config={REPO}/configs/streets.py:pix2pix', f'--manual_dir={tmp_path}/m',
                f'--data_dir={tmp_path}/tfds', *size)
  assert res.returncode == 0, res.stderr[-2000:]
  assert 'bdd_camvid/train: 1 tasks of 16x32' in res.stdout
  assert 'bdd_camvid/val: 1 tasks of 16x32' in res.stdout
  assert 'bdd_camvid/test: 1 tasks of 16x32' in res.stdout
  # A colour outside the palette: exit 1 with one line naming the file.
  lab = tmp_path / 'm' / 'camvid' / 'LabeledApproved_full' / ('0006R0_f00030_L.png')
  write_png(lab, np.full((36, 48, 3), 7))
  res = run_cli(f'--config={REPO}/configs/streets.py:pg2', f'--manual_dir={tmp_path}/m',
                f'--data_dir={tmp_path}/tfds2', *size)
  assert res.returncode == 1
  errors = [l for l in res.stderr.splitlines() if l.startswith('error:')]
  assert len(errors) == 1 and str(lab) in errors[0], res.stderr[-2000:]
