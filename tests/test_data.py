"""Tests of the data layer: synthetic scenes, TaskSet, episodes, augmentation."""
import time

import ml_collections
import numpy as np
import pytest

from bil_jax import config_lib
from bil_jax.data import augment
from bil_jax.data import episodes
from bil_jax.data import registry
from bil_jax.data import scene_layouts
from bil_jax.data import scene_render
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


# ---------------------------------------------------------------------------
# Registry and TaskSet
# ---------------------------------------------------------------------------


def test_registry_unknown_name():
  d = small_data_cfg('')
  d.name = 'no_such_dataset'
  with pytest.raises(ValueError, match=r'data\.name .*no_such_dataset.*synthetic') as e:
    registry.load_tasks(d, 'train', '/tmp')
  assert '\n' not in str(e.value)


def test_registry_register_custom_loader():
  ts = coded_taskset([3, 4])

  @registry.register('test_coded')
  def _load(data_cfg, split, workdir):
    del data_cfg, split, workdir
    return ts

  d = small_data_cfg('')
  d.name = 'test_coded'
  assert registry.load_tasks(d, 'test', '/tmp') is ts
  assert 'test_coded' in registry.known_names()


def test_taskset_accessors_and_validation():
  ts = coded_taskset([3, 5, 2])
  assert ts.num_tasks == 3 and ts.num_pairs == 10
  assert ts.task_slice(1) == slice(3, 8)
  np.testing.assert_array_equal(ts.task_sizes(), [3, 5, 2])
  sub = ts.subset([2, 0])
  assert sub.names == ('task2', 'task0') and sub.num_pairs == 5
  with pytest.raises(ValueError):
    tasks.TaskSet(ts.maps, ts.images, np.array([0, 3], np.int64), ('a',), 2)


# ---------------------------------------------------------------------------
# Episodes
# ---------------------------------------------------------------------------


def test_episode_shapes_and_ranges(built):
  ts = built[0]['train']
  ep = episodes.sample_episode(ts, 2, 3, 4, episodes.episode_rng(0, 0),
                               config_lib.base_config().data.augment)
  for part, n in (('support', 3), ('query', 4)):
    p = ep[part]
    assert p['map'].shape == (n,) + HW and p['map'].dtype == np.int32
    for k in ('image', 'ref'):
      assert p[k].shape == (n,) + HW + (3,) and p[k].dtype == np.float32
      assert p[k].min() >= -1.0 and p[k].max() <= 1.0
    assert p['map'].min() >= 0 and p['map'].max() < C


def test_support_and_query_are_disjoint_pairs_of_the_task():
  ts = coded_taskset([12, 12, 12])
  for step in range(20):
    ep = episodes.sample_episode(ts, 1, 5, 7, episodes.episode_rng(1, step), aug_cfg())
    st, sp = decode(ep['support']['image'])
    qt, qp = decode(ep['query']['image'])
    assert set(st) == set(qt) == {1}
    assert len(set(sp)) == 5 and len(set(qp)) == 7
    assert not set(sp) & set(qp)


def test_same_rng_same_episode():
  ts = coded_taskset([10, 10])
  e1 = episodes.sample_episode(ts, 0, 3, 3, episodes.episode_rng(7, 3, 1), aug_cfg())
  e2 = episodes.sample_episode(ts, 0, 3, 3, episodes.episode_rng(7, 3, 1), aug_cfg())
  e3 = episodes.sample_episode(ts, 0, 3, 3, episodes.episode_rng(7, 4, 1), aug_cfg())
  for part in ('support', 'query'):
    for k in ('map', 'image', 'ref'):
      np.testing.assert_array_equal(e1[part][k], e2[part][k])
  assert any(not np.array_equal(e1[p]['image'], e3[p]['image']) for p in ('support', 'query'))


def test_references():
  """Support ref comes from the pair's own target; query ref from a support
  target of the same task, never from the query's own target."""
  ts = coded_taskset([20, 20])
  for step in range(20):
    ep = episodes.sample_episode(ts, 0, 2, 6, episodes.episode_rng(0, step), aug_cfg())
    _, sp = decode(ep['support']['image'])
    _, sp_ref = decode(ep['support']['ref'])
    _, qp = decode(ep['query']['image'])
    qt_ref, qp_ref = decode(ep['query']['ref'])
    np.testing.assert_array_equal(sp, sp_ref)
    assert set(qt_ref) == {0}
    assert set(qp_ref) <= set(sp)
    assert not np.any(qp_ref == qp)


def test_flip_reference_false_never_flips_the_reference(built):
  ts = built[0]['train']
  no_flip = aug_cfg(flip=True, crop=1.0, rot=0.0, flip_ref=False)
  ep = episodes.sample_episode(ts, 0, 6, 0, episodes.episode_rng(0, 0), no_flip)
  target = episodes.to_float(ts.task_images(0))
  for r in ep['support']['ref']:
    assert any(np.array_equal(r, x) for x in target)
  flips = aug_cfg(flip=False, crop=1.0, rot=0.0, flip_ref=True)
  ep = episodes.sample_episode(ts, 0, 8, 0, episodes.episode_rng(0, 1), flips)
  # Pairs are not flipped, so each ref is its own target, mirrored or not.
  ref, img = ep['support']['ref'], ep['support']['image']
  mirrored = [np.allclose(r, x[:, ::-1], atol=1e-6) for r, x in zip(ref, img)]
  same = [np.allclose(r, x, atol=1e-6) for r, x in zip(ref, img)]
  assert all(m or s for m, s in zip(mirrored, same)) and any(mirrored)


def test_augment_query_false_leaves_queries_untouched(built):
  ts = built[0]['train']
  ep = episodes.sample_episode(ts, 3, 4, 8, episodes.episode_rng(0, 0), aug_cfg(rot=30.0),
                               augment_query=False)
  task_maps = {m.astype(np.int32).tobytes() for m in ts.task_maps(3)}
  task_imgs = {episodes.to_float(x).tobytes() for x in ts.task_images(3)}
  for m, x in zip(ep['query']['map'], ep['query']['image']):
    assert m.tobytes() in task_maps and x.tobytes() in task_imgs


def test_too_few_pairs():
  ts = coded_taskset([5, 20])
  with pytest.raises(ValueError, match=r"'task0' has 5 pairs.*3 \+ 4 = 7") as e:
    episodes.sample_episode(ts, 0, 3, 4, episodes.episode_rng(0, 0), None)
  assert '\n' not in str(e.value)
  ts1 = coded_taskset([1, 1])  # BDD100K-like: one pair per task
  ep = episodes.sample_episode(ts1, 1, 1, 2, episodes.episode_rng(0, 0), aug_cfg(),
                               reuse_pairs=True)
  assert ep['support']['image'].shape[0] == 1
  assert ep['query']['image'].shape[0] == 2
  ep = episodes.sample_episode(coded_taskset([6]), 0, 5, 5, episodes.episode_rng(0, 0), None,
                               reuse_pairs=True)
  _, sp = decode(ep['support']['image'])
  _, qp = decode(ep['query']['image'])
  assert len(set(sp)) == 5 and qp[0] not in sp  # queries prefer unused pairs


def test_meta_batch():
  ts = coded_taskset([8] * 6)
  mb = episodes.sample_meta_batch(ts, 5, 2, 3, episodes.episode_rng(0, 0), aug_cfg())
  assert mb['support']['map'].shape == (5, 2, 8, 8)
  assert mb['query']['image'].shape == (5, 3, 8, 8, 3)
  assert mb['query']['ref'].shape == (5, 3, 8, 8, 3)
  st, _ = decode(mb['support']['image'])
  qt, _ = decode(mb['query']['image'])
  np.testing.assert_array_equal(st[:, 0], qt[:, 0])
  assert len(set(st[:, 0])) == 5  # without replacement
  mb = episodes.sample_meta_batch(ts, 3, 2, 3, episodes.episode_rng(0, 0), None,
                                  task_indices=[4, 4, 1])
  np.testing.assert_array_equal(decode(mb['support']['image'])[0][:, 0], [4, 4, 1])
  mb = episodes.sample_meta_batch(ts, 9, 2, 3, episodes.episode_rng(0, 0), None)
  assert mb['support']['map'].shape[0] == 9  # with replacement when M > T


def test_sample_pairs():
  ts = coded_taskset([4, 5, 6])
  p = episodes.sample_pairs(ts, 15, episodes.episode_rng(0, 0), aug_cfg())
  assert p['map'].shape == (15, 8, 8) and p['ref'].shape == (15, 8, 8, 3)
  t, i = decode(p['image'])
  assert len(set(zip(t, i))) == 15  # all pairs, each once
  np.testing.assert_array_equal(decode(p['ref'])[1], i)


@pytest.mark.parametrize('reference_source', ['self', 'other'])
def test_each_slot_and_row_is_sampled_from_its_own_stream(reference_source):
  """Sampling the slots (rows) of a meta-batch (batch) in parts, as the processes of a
  multi-host run do, gives the parts of the whole: the data do not depend on the process
  count."""
  ts = coded_taskset([6] * 6)
  aug = aug_cfg()
  aug.reference_source = reference_source
  rng = lambda: episodes.episode_rng(3, 7)
  whole = episodes.sample_meta_batch(ts, 4, 2, 3, rng(), aug)
  parts = [
      episodes.sample_meta_batch(ts, 4, 2, 3, rng(), aug, rows=r)
      for r in (slice(0, 1), slice(1, 3), [3])
  ]
  for net in ('support', 'query'):
    for k, v in whole[net].items():
      np.testing.assert_array_equal(np.concatenate([p[net][k] for p in parts]), v)
  whole = episodes.sample_pairs(ts, 6, rng(), aug)
  parts = [episodes.sample_pairs(ts, 6, rng(), aug, rows=r) for r in (slice(0, 3), [3, 4, 5])]
  for k, v in whole.items():
    np.testing.assert_array_equal(np.concatenate([p[k] for p in parts]), v)
  # The rows differ from each other (their streams are independent).
  assert len({whole['image'][i].tobytes() for i in range(6)}) == 6


def test_episode_is_fast(built):
  ts = built[0]['train']
  cfg = config_lib.base_config().data.augment
  rng = episodes.episode_rng(0, 0)
  times = []
  for _ in range(20):
    t = time.perf_counter()
    episodes.sample_episode(ts, 0, 5, 5, rng, cfg)
    times.append(time.perf_counter() - t)
  assert np.median(times) < 0.02, np.median(times)  # ~3 ms unloaded


# ---------------------------------------------------------------------------
# Augmentation
# ---------------------------------------------------------------------------


def _class_coloured_batch(n, h, w, seed=0):
  maps = synthetic.generate_task(seed, 'train', 0, C, h, w, n)[1]
  palette = np.random.default_rng(1).uniform(-1, 1, (C, 3)).astype(np.float32)
  return maps.astype(np.int32), palette[maps], palette


@pytest.mark.parametrize('hw', [(32, 32), (128, 256)])
def test_augmentation_keeps_map_and_image_aligned(hw):
  """Image colour is a function of the class id; after a joint warp it still
  is, except within 2 pixels of a class boundary (bilinear blending)."""
  maps, images, palette = _class_coloured_batch(6, *hw)
  out_m, out_i = augment.augment_pairs(maps, images, np.random.default_rng(3),
                                       aug_cfg(crop=0.8, rot=30.0))
  assert out_m.dtype == np.int32 and out_i.dtype == np.float32
  assert out_m.shape == maps.shape and out_i.shape == images.shape
  assert not np.array_equal(out_m, maps)
  bad = np.abs(palette[out_m] - out_i).max(-1) > 1e-4
  assert bad.mean() < 0.3
  # Pixels with a uniform 5x5 neighbourhood in the warped map match exactly
  # (pixels within 2 of the image border are not checked).
  pad = np.pad(out_m, ((0, 0), (2, 2), (2, 2)), constant_values=-1)
  h, w = hw
  uniform = np.ones(out_m.shape, bool)
  for dy in range(5):
    for dx in range(5):
      uniform &= pad[:, dy:dy + h, dx:dx + w] == out_m
  assert not np.any(bad & uniform)


def test_flip_only_mirrors_map_and_image_together():
  maps, images, _ = _class_coloured_batch(16, 16, 16)
  out_m, out_i = augment.augment_pairs(maps, images, np.random.default_rng(0),
                                       aug_cfg(crop=1.0, rot=0.0))
  flipped = 0
  for m, x, m2, x2 in zip(maps, images, out_m, out_i):
    if np.array_equal(m2, m[:, ::-1]):
      np.testing.assert_allclose(x2, x[:, ::-1], atol=1e-6)
      flipped += 1
    else:
      np.testing.assert_array_equal(m2, m)
      np.testing.assert_allclose(x2, x, atol=1e-6)
  assert 0 < flipped < 16


def test_no_augmentation_is_identity():
  maps, images, _ = _class_coloured_batch(3, 16, 16)
  for cfg in (None, aug_cfg(flip=False, crop=1.0, rot=0.0)):
    out_m, out_i = augment.augment_pairs(maps, images, np.random.default_rng(0), cfg)
    np.testing.assert_array_equal(out_m, maps)
    np.testing.assert_allclose(out_i, images, atol=1e-6)
  ref = augment.augment_reference(images, np.random.default_rng(0), None)
  np.testing.assert_allclose(ref, images, atol=1e-6)


def test_crop_zooms_in():
  """A centred crop of fraction f scales content by 1/f about the centre."""
  x = np.zeros((1, 32, 32, 1), np.float32)
  x[0, 6:26, 6:26] = 1.0  # a 20x20 square around the centre 16x16 window
  p = augment.WarpParams(flip=np.array([False]), scale=np.array([0.5]), center_y=np.array([16.0]),
                         center_x=np.array([16.0]), angle=np.array([0.0]))
  _, out = augment.apply_warp(p, None, x)
  assert out[0, :, :, 0].min() == 1.0  # the square now fills the image
