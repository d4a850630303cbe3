"""Tests of the paired-folder builder and of bad dataset input.

Paired folders are written by tests/fixtures_datasets.py into temporary folders, built
with TFDS and read back through the dataset registry. Bad input (corrupt images, labels
out of range, mismatched sizes, missing files, too few pairs) gives one line naming the
file and leaves nothing half-written.
"""
import os

import numpy as np
import pytest

from bil_jax.data import bdd100k
from bil_jax.data import camvid
from bil_jax.data import image_io
from bil_jax.data import paired_folder
from tests import fixtures_datasets as fx
from tests.datasets_checks import (DataError, agreement, assert_one_line_naming, data_cfg, load,
                                   write_png)

# ---------------------------------------------------------------------------
# Paired folder
# ---------------------------------------------------------------------------


def paired_cfg(root, data_dir, **kw):
  return data_cfg(name='paired_folder', num_classes=5, image_height=16, image_width=24,
                  manual_dir=str(root), data_dir=str(data_dir), shots=2, queries=2, eval_queries=2,
                  **kw)


def test_paired_folder(tmp_path):
  fx.write_paired_folder(
      str(tmp_path / 'root'),
      {'train': {'alice': 4, 'bob': 5}, 'val': {'dave': 4}, 'test': {'carol': 4}}, num_classes=5,
      hw=(20, 30))
  d = paired_cfg(tmp_path / 'root', tmp_path / 'tfds')
  tr, _ = load(d, 'train')
  te, _ = load(d, 'test')
  va, _ = load(d, 'val')
  assert tr.names == ('alice', 'bob') and te.names == ('carol',)
  assert va.names == ('dave',) and va.task_sizes().tolist() == [4]
  np.testing.assert_array_equal(tr.task_sizes(), [4, 5])
  assert tr.maps.shape == (9, 16, 24) and te.images.shape == (4, 16, 24, 3)
  np.testing.assert_array_equal(np.unique(tr.maps), np.arange(5))
  assert agreement(tr.maps, tr.images, fx.class_colour(np.arange(5))) > 0.9


# ---------------------------------------------------------------------------
# Bad input: one line naming the file; nothing half-written
# ---------------------------------------------------------------------------


def test_corrupt_or_truncated_image(tmp_path):
  bad = tmp_path / 'bad.png'
  bad.write_bytes(b'not an image at all')
  with pytest.raises(DataError) as err:
    image_io.read_rgb(str(bad))
  assert_one_line_naming(err, bad)
  good = write_png(tmp_path / 'good.png', np.random.default_rng(0).integers(0, 255, (64, 64, 3)))
  cut = tmp_path / 'cut.png'
  cut.write_bytes(open(good, 'rb').read()[:400])
  with pytest.raises(DataError) as err:
    image_io.read_rgb(str(cut))
  assert_one_line_naming(err, cut)
  with pytest.raises(DataError) as err:
    image_io.read_rgb(str(tmp_path / 'missing.png'))
  assert_one_line_naming(err, tmp_path / 'missing.png')


def test_label_id_outside_the_classes(tmp_path):
  fx.write_paired_folder(str(tmp_path), {'train': {'t': 2}}, 5, hw=(8, 8))
  lab = tmp_path / 'train' / 't' / 'labels' / 'p001.png'
  ids = np.zeros((8, 8), np.uint8)
  ids[3, 6] = 7
  write_png(lab, ids)
  with pytest.raises(DataError) as err:
    list(paired_folder.generate_tasks(str(tmp_path), 'train', 5, 8, 8))
  assert_one_line_naming(err, lab)
  assert 'label id 7 at pixel (y=3, x=6)' in str(err.value)
  # BDD100K: ids 0-18 and 255 only.
  with pytest.raises(DataError) as err:
    bdd100k.bdd_ids('m.png', np.array([[0, 18, 255, 42]]))
  assert_one_line_naming(err, 'm.png')
  assert 'label id 42' in str(err.value)


def test_colour_not_in_the_camvid_palette(tmp_path):
  fx.write_camvid(str(tmp_path), {'0001TP': 10}, hw=(12, 16))
  lab = tmp_path / 'LabeledApproved_full' / '0001TP_000090_L.png'
  rgb = np.zeros((12, 16, 3), np.uint8)
  rgb[2, 5] = (1, 2, 3)
  write_png(lab, rgb)
  with pytest.raises(DataError) as err:
    list(camvid.generate_tasks(str(tmp_path), 8, 8))
  assert_one_line_naming(err, lab)
  assert 'colour (1, 2, 3) at pixel (y=2, x=5)' in str(err.value)


def test_image_and_label_of_different_sizes(tmp_path):
  fx.write_paired_folder(str(tmp_path), {'train': {'t': 2}}, 5, hw=(8, 8))
  lab = tmp_path / 'train' / 't' / 'labels' / 'p000.png'
  write_png(lab, np.zeros((9, 8)))
  with pytest.raises(DataError) as err:
    list(paired_folder.generate_tasks(str(tmp_path), 'train', 5, 8, 8))
  assert_one_line_naming(err, lab)
  assert 'label is 8x9 but its image' in str(err.value)
  fx.write_bdd100k(str(tmp_path / 'bdd'), {'train': 2}, hw=(10, 20))
  lab = tmp_path / 'bdd' / 'labels' / 'sem_seg' / 'masks' / 'train' / ('tr0000-bdd.png')
  write_png(lab, np.zeros((10, 21)))
  with pytest.raises(DataError) as err:
    list(bdd100k.generate_tasks(str(tmp_path / 'bdd'), 'train', 8, 8))
  assert_one_line_naming(err, lab)


def test_missing_image_or_label(tmp_path):
  fx.write_paired_folder(str(tmp_path), {'train': {'t': 2}}, 5, hw=(8, 8))
  os.remove(tmp_path / 'train' / 't' / 'labels' / 'p001.png')
  with pytest.raises(DataError) as err:
    list(paired_folder.generate_tasks(str(tmp_path), 'train', 5, 8, 8))
  assert_one_line_naming(err, tmp_path / 'train' / 't' / 'images' / 'p001.png')


def test_task_with_too_few_pairs(tmp_path):
  fx.write_paired_folder(str(tmp_path / 'root'),
                         {'train': {'big': 4, 'small': 3}, 'val': {'v': 4}, 'test': {'c': 4}},
                         num_classes=5, hw=(8, 8))
  d = paired_cfg(tmp_path / 'root', tmp_path / 'tfds')
  with pytest.raises(DataError) as err:
    load(d, 'train')
  assert_one_line_naming(err, tmp_path / 'root' / 'train' / 'small')
  assert 'has 3 pairs, fewer than shots + queries = 4' in str(err.value)
  d.reuse_pairs = True
  ts, _ = load(d, 'train')
  assert ts.task_sizes().tolist() == [4, 3]


def test_missing_manual_dir(tmp_path):
  for manual, named in ((str(tmp_path / 'nope'), str(tmp_path / 'nope')), ('', 'data.manual_dir')):
    for name, classes in (('paired_folder', 5), ('faceforensics', 7), ('bdd_camvid', 20)):
      d = paired_cfg(manual, tmp_path / 'tfds')
      d.name, d.num_classes = name, classes
      with pytest.raises(DataError) as err:
        load(d, 'train')
      assert_one_line_naming(err, named)
  assert not os.path.exists(tmp_path / 'tfds')  # nothing written


def prepared_files(data_dir):
  out = []
  for dirpath, _, files in os.walk(data_dir):
    out += [os.path.join(dirpath, f) for f in files]
  return out


def test_failure_leaves_nothing_half_written(tmp_path):
  """A bad file in the LAST split: the train split was already written to a
  temporary folder, which TFDS removes; nothing prepared remains."""
  root = tmp_path / 'root'
  fx.write_paired_folder(str(root), {'train': {'a': 4}, 'val': {'v': 4}, 'test': {'b': 4}},
                         num_classes=5, hw=(8, 8))
  bad = root / 'test' / 'b' / 'images' / 'p002.png'
  good_bytes = bad.read_bytes()
  bad.write_bytes(b'\x89PNG\r\n\x1a\n garbage')
  d = paired_cfg(root, tmp_path / 'tfds')
  with pytest.raises(DataError) as err:
    load(d, 'train')
  assert_one_line_naming(err, bad)
  leftovers = prepared_files(tmp_path / 'tfds')
  assert not [f for f in leftovers if 'array_record' in f or f.endswith('dataset_info.json')
             ], leftovers
  assert not [f for f in leftovers if 'incomplete' in f], leftovers
  # Fixing the file and preparing again works from scratch.
  bad.write_bytes(good_bytes)
  ts, _ = load(d, 'train')
  assert ts.names == ('a',)
