"""Tests of the dataset registry, TaskSet and episode sampling."""
import time

import numpy as np
import pytest

from bil_jax import config_lib
from bil_jax.data import episodes
from bil_jax.data import registry
from bil_jax.data import tasks
from tests.data_fixtures import C, HW, aug_cfg, coded_taskset, decode, small_data_cfg
from tests.data_fixtures import built  # pylint: disable=unused-import (fixture)

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
