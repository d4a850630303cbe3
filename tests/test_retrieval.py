"""Tests of Eq. 3 scene similarity and top-K retrieval against brute force."""

import numpy as np
import pytest

from bil_jax import retrieval

C = 6


def brute_sim(x, y, num_classes):
  """Eq. 3 by the definition; empty unions contribute 0."""
  total = 0.0
  for c in range(num_classes):
    inter = np.sum((x == c) & (y == c))
    union = np.sum((x == c) | (y == c))
    if union > 0:
      total += inter / union
  return total


def brute_task_sim(query, maps, ids, num_tasks, num_classes):
  out = np.full(num_tasks, -np.inf)
  for t in range(num_tasks):
    members = maps[ids == t]
    if len(members):
      out[t] = np.mean([brute_sim(q, m, num_classes) for q in query for m in members])
  return out


def random_maps(rng, n, h=9, w=7, num_classes=C):
  """Maps using only some classes each, so classes go missing from one/both."""
  maps = []
  for _ in range(n):
    present = rng.choice(num_classes, size=rng.integers(1, num_classes), replace=False)
    maps.append(rng.choice(present, size=(h, w)))
  return np.stack(maps).astype(np.int32)


def test_pairwise_matches_brute_force_with_absent_classes():
  rng = np.random.default_rng(0)
  a = random_maps(rng, 4)
  b = random_maps(rng, 7)
  b[0] = a[0]  # identical pair: Sim = number of classes present
  b[1] = np.full_like(a[1], C - 1)  # one class only
  got = np.asarray(retrieval.pairwise_similarity(a, b, C))
  want = np.array([[brute_sim(x, y, C) for y in b] for x in a])
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
  assert got[0, 0] == pytest.approx(len(np.unique(a[0])))


def test_absent_from_both_contributes_zero_and_disjoint_is_zero():
  x = np.zeros((1, 4, 4), np.int32)
  y = np.ones((1, 4, 4), np.int32)
  # Classes 2..9 are absent from both maps: they add nothing.
  assert float(retrieval.pairwise_similarity(x, x, 10)[0, 0]) == 1.0
  assert float(retrieval.pairwise_similarity(x, y, 10)[0, 0]) == 0.0


def test_out_of_range_ids_are_ignored():
  rng = np.random.default_rng(1)
  a = random_maps(rng, 3)
  b = random_maps(rng, 3)
  a[:, 0, :] = 255
  b[:, :, 0] = -1
  got = np.asarray(retrieval.pairwise_similarity(a, b, C))
  want = np.array([[brute_sim(x, y, C) for y in b] for x in a])
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_uint8_maps_give_the_same_result():
  rng = np.random.default_rng(2)
  a, b = random_maps(rng, 2), random_maps(rng, 3)
  np.testing.assert_array_equal(
      np.asarray(retrieval.pairwise_similarity(a.astype(np.uint8), b.astype(np.uint8), C)),
      np.asarray(retrieval.pairwise_similarity(a, b, C)))


def test_task_similarity_matches_brute_force_and_is_chunk_invariant():
  rng = np.random.default_rng(3)
  query = random_maps(rng, 3)
  maps = random_maps(rng, 23)
  sizes = [1, 3, 2, 4, 1, 5, 2, 5]
  ids = retrieval.task_ids_from_offsets(np.concatenate([[0], np.cumsum(sizes)]))
  maps[ids == 4] = maps[ids == 0]  # tasks 0 and 4 tie exactly
  want = brute_task_sim(query, maps, ids, len(sizes), C)
  results = [
      retrieval.task_similarity(query, maps, ids, C, chunk_size=cs) for cs in (1, 4, 7, 23, 100)
  ]
  for got in results:
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(got, results[0])
  assert results[0][0] == results[0][4]


def test_task_ids_in_any_order_and_empty_tasks():
  rng = np.random.default_rng(4)
  query = random_maps(rng, 2)
  maps = random_maps(rng, 6)
  ids = np.array([2, 0, 2, 3, 0, 2])  # task 1 has no maps
  got = retrieval.task_similarity(query, maps, ids, C, num_tasks=5, chunk_size=4)
  want = brute_task_sim(query, maps, ids, 5, C)
  assert np.isneginf(got[1]) and np.isneginf(got[4])
  np.testing.assert_allclose(got, want, rtol=1e-6)


def test_top_k_orders_by_score_and_breaks_ties_by_lower_index():
  sims = np.array([0.5, 2.0, 0.5, 3.0, 2.0, np.nan, 0.5])
  np.testing.assert_array_equal(retrieval.top_k_tasks(sims, 4), [3, 1, 4, 0])
  np.testing.assert_array_equal(retrieval.top_k_tasks(sims, 6), [3, 1, 4, 0, 2, 6])
  np.testing.assert_array_equal(retrieval.top_k_tasks(sims, 3, exclude=[3, 4]), [1, 0, 2])
  np.testing.assert_array_equal(retrieval.top_k_tasks(sims, 0), [])
  with pytest.raises(ValueError):
    retrieval.top_k_tasks(sims, 7, exclude=[0])


def test_top_k_of_task_similarity_with_tied_tasks():
  rng = np.random.default_rng(5)
  query = random_maps(rng, 1)
  maps = random_maps(rng, 5)
  maps[3] = query[0]
  maps[1] = query[0]  # tasks 1 and 3 tie at the maximum
  sims = retrieval.task_similarity(query, maps, np.arange(5), C)
  top = retrieval.top_k_tasks(sims, 2)
  np.testing.assert_array_equal(top, [1, 3])
