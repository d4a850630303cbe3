"""Families of synthetic scenes: determinism, family structure, Eq. 3 retrieval, PG² refs.

Scenes of one family (like the clips of one city or one identity) share layout
statistics and a look; each scene still has its own palette and light. Test scenes are
new scenes of the training families, so Eq. 3 map similarity should retrieve training
scenes of the same family and hence of similar appearance.
"""
import ml_collections
import numpy as np

from bil_jax import retrieval
from bil_jax.data import episodes
from bil_jax.data import scene_families
from bil_jax.data import synthetic
from bil_jax.data import tasks

C, H, W, F = 8, 32, 32, 10
KW = dict(num_families=F, appearance_jitter=0.1, layout_jitter=0.06)


def _task(split, i, pairs=10, seed=1234):
  return synthetic.generate_task(seed, split, i, C, H, W, pairs, **KW)


def _class_means(maps, images):
  """Mean colour of each class, NaN where absent: [C, 3]."""
  im = images.astype(float)
  return np.stack(
      [im[maps == c].mean(0) if (maps == c).any() else np.full(3, np.nan) for c in range(C)])


def test_generation_is_deterministic_and_splits_differ():
  a, b = _task('train', 3), _task('train', 3)
  np.testing.assert_array_equal(a[1], b[1])
  np.testing.assert_array_equal(a[2], b[2])
  c = _task('test', 3)  # same family (3 % F), another scene
  assert c[0] == 'test_seen_00003'
  assert not np.array_equal(a[1], c[1]) and not np.array_equal(a[2], c[2])
  d = synthetic.generate_task(1234, 'train', 3, C, H, W, 10)  # no families: other data
  assert not np.array_equal(a[1], d[1])


def test_builder_config_name_encodes_family_parameters():
  base = (C, H, W, 200, 20, 30, 1234)
  names = {
      synthetic.make_builder_config(*base).name,
      synthetic.make_builder_config(*base, num_families=10).name,
      synthetic.make_builder_config(*base, num_families=12).name,
      synthetic.make_builder_config(*base, num_families=10, appearance_jitter=0.2).name,
      synthetic.make_builder_config(*base, num_families=10, layout_jitter=0.3).name,
      synthetic.make_builder_config(*base, num_families=10, unseen_families=2).name
  }
  assert len(names) == 6
  assert (synthetic.make_builder_config(*base).name == 'c8_h32_w32_tr200_va20_te20_p30_m1_s1234')


def test_val_and_test_have_seen_and_unseen_family_scenes():
  """Names follow the condition; unseen families are new, and val's differ from test's."""
  cfg = synthetic.make_builder_config(C, H, W, 6, 5, 4, 1234, num_families=3, num_val_tasks=4,
                                      unseen_families=2)
  names = {s: [t[0] for t in synthetic.generate_split(cfg, s)] for s in synthetic.SPLITS}
  assert names['train'] == [f'train_{i:05d}' for i in range(6)]
  assert names['val'] == [
      'val_seen_00000', 'val_seen_00001', 'val_unseen_00000', 'val_unseen_00001'
  ]
  assert [tasks.task_condition(n) for n in names['test']] == ['seen'] * 3 + ['unseen'] * 2
  assert tasks.task_condition('train_00003') == tasks.task_condition('clip_7') == 'all'
  fams = {
      s: {synthetic.task_family(s, c, i, 3, 2) for c, i in synthetic.split_conditions(s, 5, 3, 2)}
      for s in ('val', 'test')
  }
  assert fams['val'] == {0, 1, 2, 3, 4} and fams['test'] == {0, 1, 2, 5, 6}
  # An unseen-family scene uses its family's classes, which a training family's need not.
  _, maps, _ = synthetic.generate_task(1234, 'test', 0, C, H, W, 6, **KW, condition='unseen',
                                       unseen_families=2)
  allowed = set(scene_families.sample_family(1234, F + 2, C)['layout']['cls'].tolist()) | {0}
  assert set(np.unique(maps).tolist()) <= allowed


def test_val_and_test_load_with_the_conditions_alternating(tmp_path):
  """load_data orders val and test so that any first N tasks hold both conditions (the
  tuning and a short evaluation read the first N); train keeps its order."""
  from bil_jax import config_lib  # pylint: disable=g-import-not-at-top
  from bil_jax.data import loading  # pylint: disable=g-import-not-at-top
  assert tasks.balanced_order(['t_seen_0', 't_seen_1', 't_seen_2', 't_unseen_0',
                               't_unseen_1']) == [0, 3, 1, 4, 2]
  assert tasks.balanced_order(['a', 'b', 'c']) == [0, 1, 2]
  c = config_lib.base_config()
  c.data.image_height = c.data.image_width = 16
  c.data.num_train_tasks, c.data.num_val_tasks, c.data.num_test_tasks = 3, 4, 5
  c.data.pairs_per_task, c.data.num_families, c.data.unseen_families = 4, 2, 1
  data = loading.load_data(c, str(tmp_path))
  assert data.test.names == ('test_seen_00000', 'test_unseen_00000', 'test_seen_00001',
                             'test_unseen_00001', 'test_seen_00002')
  assert data.val.names == ('val_seen_00000', 'val_unseen_00000', 'val_seen_00001',
                            'val_unseen_00001')
  assert data.train.names == tuple(f'train_{i:05d}' for i in range(3))
  # The pairs travel with their names.
  cfg = synthetic.builder_config_from_data_cfg(c.data)
  raw = {n: m for n, m, _ in synthetic.generate_split(cfg, 'test')}
  np.testing.assert_array_equal(data.test.task_maps(1), raw['test_unseen_00000'])


def test_a_family_uses_its_own_classes_in_train_and_test():
  """Every map of a family's scenes shows only the family's classes (plus background)."""
  for f in range(3):
    allowed = set(scene_families.sample_family(1234, f, C)['layout']['cls'].tolist()) | {0}
    for split, i in (('train', f), ('train', f + F), ('test', f)):
      assert set(np.unique(_task(split, i)[1]).tolist()) <= allowed


def test_scenes_of_a_family_look_alike_but_each_has_its_own_palette():
  """Per-class colours: scenes of one family are closer than scenes of different
  families, yet two scenes of one family are not identical."""
  means = [_class_means(*_task('train', i)[1:]) for i in range(2 * F)]
  same, other = [], []
  for i in range(2 * F):
    for j in range(i + 1, 2 * F):
      d = np.nanmean(np.abs(means[i] - means[j]))
      if not np.isnan(d):
        (same if i % F == j % F else other).append(d)
  assert np.mean(same) < 0.6 * np.mean(other), (np.mean(same), np.mean(other))
  assert min(same) > 3.0, min(same)  # 0-255 units: scenes differ within a family


def test_eq3_retrieval_finds_same_family_tasks():
  """Top-5 Eq. 3 retrieval (5 support maps vs 60 training scenes of 6 pairs) returns
  same-family scenes far above chance (1/F = 0.1)."""
  train = [_task('train', i, pairs=6) for i in range(6 * F)]
  maps = np.concatenate([t[1] for t in train])
  ids = np.repeat(np.arange(len(train)), 6)
  hits = []
  for i in range(F):
    support = _task('test', i, pairs=5)[1]
    sims = retrieval.task_similarity(support, maps, ids, C, num_tasks=len(train))
    top = retrieval.top_k_tasks(sims, 5)
    hits += [scene_families.family_of(int(j), F) == scene_families.family_of(i, F) for j in top]
  assert np.mean(hits) >= 0.5, np.mean(hits)


def _coded(sizes, hw=(4, 4)):
  """Constant images coding (task, pair) so a reference's source can be read back."""
  items = []
  for t, n in enumerate(sizes):
    imgs = np.zeros((n,) + hw + (3,), np.uint8)
    imgs[..., 0] = t * 10
    imgs[..., 1] = np.arange(n)[:, None, None] * 5
    items.append((f't{t}', np.zeros((n,) + hw, np.uint8), imgs))
  return tasks.from_tasks(items, num_classes=2)


def _decode(ref):
  px = np.rint((ref[:, 0, 0] + 1) * 127.5)
  return np.rint(px[:, 0] / 10).astype(int), np.rint(px[:, 1] / 5).astype(int)


def test_reference_source_other_uses_another_pair_of_the_same_task():
  """reference_source='other': PG² references come from another pair of the same task
  (pooled pre-training pairs) or another support shot (episodes), never the pair's own."""
  ts = _coded([3, 1, 6])
  aug = ml_collections.ConfigDict(
      dict(flip=True, crop_fraction=0.9, max_rotation_deg=10.0, flip_reference=True,
           reference_source='other'))
  rng = np.random.default_rng(0)
  for _ in range(20):
    b = episodes.sample_pairs(ts, 6, rng, aug)
    t_img, p_img = _decode(b['image'])
    t_ref, p_ref = _decode(b['ref'])
    np.testing.assert_array_equal(t_img, t_ref)
    single = t_img == 1  # a one-pair task can only use itself
    assert np.all((p_img != p_ref) | single)
    ep = episodes.sample_episode(ts, 2, 4, 2, rng, aug)
    sup_t, sup_p = _decode(ep['support']['image'])
    ref_t, ref_p = _decode(ep['support']['ref'])
    assert np.all(ref_t == 2) and np.all(ref_p != sup_p)
    assert set(ref_p) <= set(sup_p)


def test_memorising_the_shots_does_not_predict_a_new_frame():
  """On default-config scenes (families, unseen families, motion 1), looking the query
  up in 5 shots pixel by pixel gains less than 0.1 SSIM over each label's mean colour,
  and the shot with the most similar map is worse than the label mean: objects, camera
  and light move between frames, and texture moves with them. (A generator with
  texture on image coordinates gives the per-pixel lookup about 0.2 over the mean.)"""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from bil_jax import lookups, metrics  # pylint: disable=g-import-not-at-top
  cfg = synthetic.make_builder_config(C, H, W, 1, 1, 15, 0, num_families=F, unseen_families=3,
                                      num_val_tasks=8)
  scores = {k: [] for k in lookups.PREDICTORS}
  to_float = lambda x: x.astype(np.float32) / 127.5 - 1
  for _, maps, images in synthetic.generate_split(cfg, 'val'):
    s, q = slice(0, 5), slice(5, None)
    preds = lookups.predict_all(maps[s].astype(int), to_float(images[s]), maps[q].astype(int))
    for k, p in zip(lookups.PREDICTORS, preds):
      scores[k].append(float(metrics.ssim(jnp.asarray(p), jnp.asarray(to_float(images[q]))).mean()))
  m = {k: np.mean(v) for k, v in scores.items()}
  assert m['lookup_pixel'] < m['lookup_label'] + 0.1, m
  assert m['nearest_shot'] < m['lookup_label'], m
