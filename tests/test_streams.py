"""The named random streams and the episode Sampler draw exactly what the numbered
streams and the explicit sampling calls drew before them (results stay bitwise equal)."""
import jax
import numpy as np

from bil_jax import config_lib, streams
from bil_jax.data import episodes, tasks

# The numbers the code used before the named table (issue 11).
BEFORE = {"pretrain": 1, "meta": 2, "heldout": 3, "eval": 4, "aux": 5}
BEFORE_KEYS = {"pretrain": 11, "meta": 12, "heldout": 14}


def _taskset(n=3, pairs=6):
  rng = np.random.default_rng(0)
  return tasks.from_tasks(
      [(f"t{i}", rng.integers(0, 3, (pairs, 8, 8)), rng.integers(0, 256, (pairs, 8, 8, 3)))
       for i in range(n)], 3)


def _equal(a, b):
  jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), a, b)


def test_named_streams_are_the_old_numbers():
  for name, number in BEFORE.items():
    a = streams.episode_rng(7, name, 3).integers(0, 2 ** 31, 4)
    b = episodes.episode_rng(7, 3, number).integers(0, 2 ** 31, 4)
    np.testing.assert_array_equal(a, b)
  root = jax.random.PRNGKey(7)
  for name, tag in BEFORE_KEYS.items():
    _equal(streams.key(7, name), jax.random.fold_in(root, tag))
  _equal(streams.key(7, "aux", 3), jax.random.fold_in(root, 1000 + 3))
  _equal(streams.key(7, "eval", 3), jax.random.fold_in(root, 2_000_000 + 3))
  assert streams.aux_step(2, 5) == 2 * 100_003 + 5
  assert streams.QUERY_DROPOUT == 2 ** 20


def test_sampler_equals_the_explicit_calls():
  c = config_lib.base_config()
  c.data.shots, c.data.queries, c.data.eval_queries = 2, 2, 3
  d = c.data
  ts = _taskset()
  s = episodes.Sampler.from_config(d)
  rng = lambda: np.random.default_rng(1)  # pylint: disable=unnecessary-lambda-assignment
  _equal(s.pairs(ts, 4, rng()), episodes.sample_pairs(ts, 4, rng(), d.augment))
  _equal(s.meta_batch(ts, 2, rng()),
         episodes.sample_meta_batch(ts, 2, 2, 2, rng(), d.augment, reuse_pairs=False))
  _equal(s.meta_batch(ts, 2, rng(), task_indices=[2, 0], augment_query=False),
         episodes.sample_meta_batch(ts, 2, 2, 2, rng(), d.augment, [2, 0], augment_query=False))
  _equal(s.eval_episode(ts, 1, rng()),
         episodes.sample_episode(ts, 1, 2, 3, rng(), d.augment, augment_query=False))
  _equal(s.eval_split(ts, 1, rng()), episodes.split_indices(6, 2, 3, rng(), "t1"))
