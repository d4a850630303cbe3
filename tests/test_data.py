"""Tests of the synthetic scenes dataset: determinism, shapes, splits, appearance, speed."""
import time

import numpy as np
import pytest

from bil_jax import config_lib
from bil_jax.data import scene_layouts
from bil_jax.data import scene_render
from bil_jax.data import synthetic
from bil_jax.data import tasks
from tests.data_fixtures import C, HW, small_data_cfg
from tests.data_fixtures import built  # pylint: disable=unused-import (fixture)

# ---------------------------------------------------------------------------
# Synthetic dataset
# ---------------------------------------------------------------------------


def test_dataset_is_deterministic(built):
  a, b = built
  for split in synthetic.SPLITS:
    assert a[split].names == b[split].names
    np.testing.assert_array_equal(a[split].maps, b[split].maps)
    np.testing.assert_array_equal(a[split].images, b[split].images)
    np.testing.assert_array_equal(a[split].offsets, b[split].offsets)


def test_shapes_dtypes_and_classes(built):
  for split, num in (('train', 8), ('val', 3), ('test', 4)):
    ts = built[0][split]
    assert ts.num_tasks == num and ts.num_classes == C
    assert ts.maps.shape == (num * 12,) + HW and ts.maps.dtype == np.uint8
    assert ts.images.shape == (num * 12,) + HW + (3,)
    assert ts.images.dtype == np.uint8
    assert ts.offsets.dtype == np.int64
    np.testing.assert_array_equal(ts.offsets, np.arange(num + 1) * 12)
    assert ts.image_hw == HW
    assert ts.task_maps(1).shape == (12,) + HW
    assert ts.task_images(1).shape == (12,) + HW + (3,)
    assert list(ts.names) == sorted(ts.names)
    # Every class id is valid, and every class appears in the training scenes.
    assert ts.maps.max() < C
    if split == 'train':
      np.testing.assert_array_equal(np.unique(ts.maps), np.arange(C))
    # Images use the dynamic range.
    assert ts.images.min() < 40 and ts.images.max() > 215


@pytest.mark.parametrize('a, b', [('train', 'val'), ('train', 'test'), ('val', 'test')])
def test_splits_are_disjoint(built, a, b):
  tr, te = built[0][a], built[0][b]
  assert not set(tr.names) & set(te.names)
  seen = {x.tobytes() for x in tr.images}
  assert not any(x.tobytes() in seen for x in te.images)
  seen = {x.tobytes() for x in tr.maps}
  assert not any(x.tobytes() in seen for x in te.maps)


def test_synthetic_seed_minus_one_follows_config_seed():
  """-1 (the default): the data seed is config.seed, also when set after the config
  is built (as --config.seed does); any other value pins the data."""
  cfg = config_lib.base_config()
  cfg.lock()
  assert cfg.data.synthetic_seed == -1
  names = set()
  for seed in (0, 1):
    cfg.seed = seed
    assert synthetic.data_seed(cfg.data) == seed
    names.add(synthetic.builder_config_from_data_cfg(cfg.data).name)
  assert len(names) == 2
  cfg.data.synthetic_seed = 7
  assert synthetic.data_seed(cfg.data) == 7
  cfg.data.synthetic_seed = -2
  with pytest.raises(ValueError, match='data.synthetic_seed=-2'):
    synthetic.data_seed(cfg.data)


def test_unknown_split_is_refused():
  with pytest.raises(ValueError, match="split must be one of .*'nope'"):
    synthetic.load_synthetic(small_data_cfg(''), 'nope', '/tmp')


def _still_clip(n, h=32, w=32, seed=0):
  """Objects, a motionless clip of n frames, one look and one light for every frame."""
  rng = np.random.default_rng(seed)
  objects = scene_layouts.sample_objects(rng, C, h, w)
  moves = scene_layouts.sample_motion(rng, n, objects['cls'].shape[0], 0.0)
  look = scene_render.sample_appearance(rng, C)
  light = scene_render.sample_lighting(rng, look, moves['t'], 0.0)
  return objects, moves, look, light


def test_same_layout_looks_different_in_two_scenes():
  """The map does not reveal the appearance: same frames, other look, other image."""
  objects, moves, _, light = _still_clip(6)
  frame = scene_layouts.paint(objects, moves, *HW)
  img = [
      scene_render.render(frame, scene_render.sample_appearance(np.random.default_rng(s), C), light,
                          np.random.default_rng(9)) for s in (1, 2)
  ]
  diff = np.abs(img[0].astype(float) - img[1].astype(float)).mean()
  assert diff > 30.0, diff


@pytest.mark.parametrize('what', ['camera', 'object'])
def test_texture_and_shading_move_with_the_camera_and_the_objects(what):
  """Frame 1 is frame 0 with the camera (or the top object) moved 4 pixels right:
  its pixels are frame 0's 4 pixels to the left (up to noise), so texture and
  shading travel with the world and the objects instead of staying on the image."""
  objects, moves, look, light = _still_clip(2, seed=3)
  objects['kind'][-1] = 1  # the top object: an ellipse well inside the image
  objects['cy'][-1], objects['cx'][-1], objects['a'][-1], objects['b'][-1] = .5, .4, .25, .2
  look['contrast'][:], look['freq'][:] = 1.0, 4.0  # a half period per 4 pixels
  look['base'][:], look['tex'][:] = 0.9, 0.1
  shift = 4 / HW[1]
  if what == 'camera':
    moves['cam_dx'][1] = shift
  else:
    moves['dx'][1, -1] = shift
  frame = scene_layouts.paint(objects, moves, *HW)
  img = scene_render.render(frame, look, light, np.random.default_rng(0)).astype(float)
  m = frame['maps']
  if what == 'camera':
    region = np.ones(HW, bool)
    region[:, :4] = False
  else:  # the moved object's pixels that stay inside it and away from its outline
    top = len(objects['cls']) - 1
    inside = (frame['top'][1] == top)
    region = inside & np.roll(inside, 2, 1) & np.roll(inside, -2, 1)
    region &= np.roll(region, 1, 0) & np.roll(region, -1, 0)
  assert region.sum() > 30
  np.testing.assert_array_equal(m[1][region], np.roll(m[0], 4, 1)[region])
  moved = np.abs(img[1] - np.roll(img[0], 4, 1))[region].mean()
  anchored = np.abs(img[1] - img[0])[region].mean()
  # Two draws of the pixel noise (std 0.02 * 255) differ by 5.8 on average.
  assert moved < 7.0 and anchored > 3 * moved, (moved, anchored)


def test_scenes_have_diverse_palettes(built):
  """Per-class mean colours vary across scenes (each scene shifts the dataset-wide
  class prior); the mean image over scenes is far from every scene."""
  ts = built[0]['train']
  means = np.stack([
      np.stack([
          ts.task_images(t)[ts.task_maps(t) == c].mean(0) if
          (ts.task_maps(t) == c).any() else np.full(3, np.nan) for c in range(C)
      ]) for t in range(ts.num_tasks)
  ])  # [T,C,3]
  assert np.nanmean(np.nanstd(means, 0)) > 15.0
  per_scene = np.stack([ts.task_images(t).astype(float).mean(0) for t in range(ts.num_tasks)
                       ])  # [T,H,W,3]
  grand = per_scene.mean(0)
  assert np.abs(per_scene - grand).mean(axis=(1, 2, 3)).min() > 5.0


def test_class_priors_are_shared_by_train_and_test_scenes():
  """Scenes perturb one dataset-wide colour per class: averaged over many scenes, a
  class looks alike in train and test, while different classes look different."""

  def class_means(split):
    out = []
    for i in range(24):
      _, m, im = synthetic.generate_task(5, split, i, C, 32, 32, 6)
      out.append([im[m == c].mean(0) if (m == c).any() else np.full(3, np.nan) for c in range(C)])
    return np.nanmean(np.asarray(out, float), axis=0)  # [C,3]

  tr, te = class_means('train'), class_means('test')
  same = np.abs(tr - te).mean()
  other = np.abs(tr - np.roll(te, 1, axis=0)).mean()
  assert same < 0.5 * other, (same, other)


def test_scene_pairs_share_appearance_and_differ_in_layout(built):
  ts = built[0]['train']
  maps = ts.task_maps(0)
  assert len({m.tobytes() for m in maps}) == maps.shape[0]
  # Within a scene a class has a consistent hue across pairs (the light changes its
  # brightness only): chromaticity r,g,b / (r+g+b) of the background.
  imgs = ts.task_images(0).astype(float)
  a = imgs[:6][maps[:6] == 0].mean(0)
  b = imgs[6:][maps[6:] == 0].mean(0)
  assert np.abs(a / a.sum() - b / b.sum()).max() < 0.03, (a, b)


def test_tfrecord_and_array_record_read_the_same(tmp_path):
  """taskset_from_tfds reads tf.data-backed (tfrecord) builders too."""
  cfg = synthetic.make_builder_config(3, 16, 16, 2, 1, 3, 5)
  out = [
      tasks.taskset_from_tfds(synthetic.prepare_builder(cfg, str(tmp_path / fmt), fmt), 'train', 3)
      for fmt in ('array_record', 'tfrecord')
  ]
  assert out[0].names == out[1].names
  np.testing.assert_array_equal(out[0].maps, out[1].maps)
  np.testing.assert_array_equal(out[0].images, out[1].images)


def test_builder_config_name_encodes_parameters():
  c1 = synthetic.make_builder_config(8, 32, 32, 200, 20, 30, 1234)
  c2 = synthetic.make_builder_config(8, 32, 32, 200, 20, 30, 1235)
  c3 = synthetic.make_builder_config(8, 64, 32, 200, 20, 30, 1234)
  c4 = synthetic.make_builder_config(8, 32, 32, 200, 20, 30, 1234, num_val_tasks=5)
  assert len({c1.name, c2.name, c3.name, c4.name}) == 4


def test_generation_is_fast_and_works_at_128x256():
  t = time.process_time()  # CPU time: the machine may be shared
  for i in range(10):
    synthetic.generate_task(0, 'train', i, C, 32, 32, 30)
  assert (time.process_time() - t) / 10 < 0.05
  _, maps, images = synthetic.generate_task(0, 'test', 0, 20, 128, 256, 2)
  assert maps.shape == (2, 128, 256) and images.shape == (2, 128, 256, 3)
  assert maps.max() < 20
