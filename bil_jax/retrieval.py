"""Scene similarity (Eq. 3) and top-K auxiliary task retrieval (Sec. 3.2).

Eq. 3 of the paper, for two segmentation maps x, y of the same size:

  Sim(x, y) = sum_{c=0}^{C-1} |{x = c} & {y = c}| / |{x = c} | {y = c}|.

Conventions (the paper leaves them open):

  * A class absent from both maps (empty union) contributes 0, so Sim is in
    [0, C] and two maps only score for classes they actually contain.
  * Pixels whose id lies outside [0, num_classes) (e.g. an ignore label 255)
    belong to no class: they count in no intersection and no union.
  * Multi-image tasks: the similarity of the unseen task (its n support maps)
    to a candidate task with m maps is the mean of Sim over all n * m
    (support map, candidate map) pairs. A task id with no maps gets -inf so
    that it is never retrieved.

Computation: with one-hot maps o_x[p, c], per-class intersections are
one-hot matmuls inter[a, b, c] = sum_p o_a[p, c] o_b[p, c] (evaluated as
E_a @ o_a with E_a[b, p] = [x_a[p] = x_b[p]], int8 in, int32 out, exact),
areas are per-class pixel counts and union = area_a + area_b - inter. Large
candidate databases are processed in fixed-size, padded chunks (one
compilation), so only chunk_size candidate maps are expanded at a time.

Its timing on random maps: ``python -m bil_jax.bench.retrieval``.
"""

import functools
from typing import Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

ArrayLike = Union[jax.Array, np.ndarray]


def _valid_ids(maps: jax.Array, num_classes: int) -> jax.Array:
  """[N, H, W] ids -> [N, P] int32 with ids outside [0, C) replaced by C."""
  flat = maps.reshape(maps.shape[0], -1).astype(jnp.int32)
  return jnp.where((flat >= 0) & (flat < num_classes), flat, num_classes)


def class_areas(flat: jax.Array, num_classes: int) -> jax.Array:
  """Per-class pixel counts. flat: [N, P] ids in [0, C] (C: ignored) -> [N, C].

  A scatter-add histogram over one flat [N * (C + 1)] array (O(N P), faster
  on CPU than a 2-D scatter or a one-hot reduction); exact int32 counts.
  """
  n = flat.shape[0]
  bins = num_classes + 1
  offsets = (jnp.arange(n, dtype=jnp.int32) * bins)[:, None]
  counts = jnp.zeros((n * bins,), jnp.int32).at[(flat + offsets).ravel()].add(1)
  return counts.reshape(n, bins)[:, :num_classes]


def class_intersections(flat_a: jax.Array, flat_b: jax.Array, num_classes: int) -> jax.Array:
  """Per-class intersection counts inter[a, b, c] = sum_p oh_a[p, c] oh_b[p, c].

  Uses oh_a[p, c] * oh_b[p, c] = [x_a[p] = x_b[p]] * oh_a[p, c], i.e. one
  int8 matmul per query map: inter[a] = E_a @ oh_a with E_a[b, p] =
  [x_a[p] = x_b[p]]: the same A*B*P*C multiply-adds as the per-class form but
  with GEMM-friendly shapes, exact int32 accumulation. Memory: A*B*P bytes.

  Args:
    flat_a: [A, P] ids in [0, C] (C = ignored pixel).
    flat_b: [B, P] ids in [0, C].
    num_classes: C.

  Returns:
    [A, B, C] int32.
  """
  classes = jnp.arange(num_classes, dtype=jnp.int32)[:, None]
  equal = (flat_a[:, None, :] == flat_b[None, :, :]).astype(jnp.int8)
  one_hot_a = (flat_a[:, None, :] == classes).astype(jnp.int8)  # [A, C, P]
  return jnp.einsum('abp,acp->abc', equal, one_hot_a, preferred_element_type=jnp.int32)


def _iou_sum(inter: jax.Array, area_a: jax.Array, area_b: jax.Array) -> jax.Array:
  """Sum over classes of IoU, 0 for empty unions.

  Args:
    inter: [A, B, C] intersection counts.
    area_a: [A, C] pixel counts of the first maps.
    area_b: [B, C] pixel counts of the second maps.

  Returns:
    [A, B] float32 similarities.
  """
  union = area_a[:, None, :] + area_b[None, :, :] - inter
  iou = jnp.where(union > 0,
                  inter.astype(jnp.float32) / jnp.maximum(union, 1).astype(jnp.float32), 0.0)
  return jnp.sum(iou, axis=-1)


@functools.partial(jax.jit, static_argnames=('num_classes',))
def pairwise_similarity(maps_a: ArrayLike, maps_b: ArrayLike, num_classes: int) -> jax.Array:
  """Eq. 3 for all pairs of maps.

  Args:
    maps_a: [A, H, W] integer class ids.
    maps_b: [B, H, W] integer class ids.
    num_classes: C; ids outside [0, C) are ignored.

  Returns:
    [A, B] float32, entry [a, b] = Sim(maps_a[a], maps_b[b]) in [0, C].
  """
  flat_a = _valid_ids(jnp.asarray(maps_a), num_classes)
  flat_b = _valid_ids(jnp.asarray(maps_b), num_classes)
  inter = class_intersections(flat_a, flat_b, num_classes)
  return _iou_sum(inter, class_areas(flat_a, num_classes), class_areas(flat_b, num_classes))


@functools.partial(jax.jit, static_argnames=('num_classes',))
def _mean_similarity_to_query(query_maps: jax.Array, chunk: jax.Array,
                              num_classes: int) -> jax.Array:
  """[n, H, W], [M, H, W] -> [M]: mean over the n query maps of Sim."""
  return jnp.mean(pairwise_similarity(query_maps, chunk, num_classes), axis=0)


def task_ids_from_offsets(offsets: Sequence[int]) -> np.ndarray:
  """Task offsets [T + 1] (CSR style, offsets[0] = 0) -> task ids [N]."""
  offsets = np.asarray(offsets, dtype=np.int64)
  if offsets.ndim != 1 or offsets[0] != 0 or np.any(np.diff(offsets) < 0):
    raise ValueError('offsets must be 1-D, start at 0 and be non-decreasing')
  return np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))


def per_map_similarity(query_maps: ArrayLike, candidate_maps: ArrayLike, num_classes: int,
                       chunk_size: int = 128) -> np.ndarray:
  """Mean Sim of each candidate map to the query maps, chunked.

  Args:
    query_maps: [n, H, W] integer ids (support maps of the unseen task).
    candidate_maps: [N, H, W] integer ids (host numpy preferred: only one
      chunk at a time is moved to the device).
    num_classes: C.
    chunk_size: candidate maps per jitted call; the last chunk is padded, so
      there is a single compilation.

  Returns:
    [N] float32 numpy, entry i = mean_j Sim(query_maps[j], candidate_maps[i]).
  """
  query = jnp.asarray(query_maps)
  n = candidate_maps.shape[0]
  if candidate_maps.shape[1:] != query.shape[1:]:
    raise ValueError(f'map shapes differ: query {query.shape[1:]}, '
                     f'candidates {candidate_maps.shape[1:]}')
  chunk_size = max(1, min(chunk_size, n))
  outs = []
  for start in range(0, n, chunk_size):
    chunk = candidate_maps[start:start + chunk_size]
    valid = chunk.shape[0]
    if valid < chunk_size:
      pad = np.zeros((chunk_size - valid,) + tuple(chunk.shape[1:]),
                     dtype=np.asarray(chunk[:1]).dtype)
      chunk = np.concatenate([np.asarray(chunk), pad], axis=0)
    outs.append(_mean_similarity_to_query(query, chunk, num_classes)[:valid])
  if not outs:
    return np.zeros((0,), np.float32)
  return np.asarray(jnp.concatenate(outs))


def task_similarity(query_maps: ArrayLike, candidate_maps: ArrayLike, candidate_task_ids: ArrayLike,
                    num_classes: int, num_tasks: Optional[int] = None,
                    chunk_size: int = 128) -> np.ndarray:
  """Similarity of the unseen task to every candidate task.

  Args:
    query_maps: [n, H, W] support maps of the unseen task.
    candidate_maps: [N, H, W] maps of all candidate tasks.
    candidate_task_ids: [N] task id in [0, T) of each candidate map (use
      `task_ids_from_offsets` for CSR offsets).
    num_classes: C.
    num_tasks: T; defaults to max(candidate_task_ids) + 1.
    chunk_size: see `per_map_similarity`.

  Returns:
    [T] float32 numpy: mean of Sim over all (query map, task-t map) pairs;
    -inf for a task with no maps.
  """
  ids = np.asarray(candidate_task_ids, dtype=np.int64)
  if ids.shape != (candidate_maps.shape[0],):
    raise ValueError(f'candidate_task_ids has shape {ids.shape}, expected '
                     f'({candidate_maps.shape[0]},)')
  if num_tasks is None:
    num_tasks = int(ids.max()) + 1 if ids.size else 0
  if ids.size and (ids.min() < 0 or ids.max() >= num_tasks):
    raise ValueError(f'task ids must lie in [0, {num_tasks})')
  per_map = per_map_similarity(query_maps, candidate_maps, num_classes,
                               chunk_size).astype(np.float64)
  sums = np.bincount(ids, weights=per_map, minlength=num_tasks)
  counts = np.bincount(ids, minlength=num_tasks)
  with np.errstate(invalid='ignore', divide='ignore'):
    sims = np.where(counts > 0, sums / np.maximum(counts, 1), -np.inf)
  return sims.astype(np.float32)


def top_k_tasks(similarities: ArrayLike, k: int,
                exclude: Optional[Sequence[int]] = None) -> np.ndarray:
  """Indices of the k most similar tasks, best first.

  Ties are broken by the lower index (stable sort), so the result is
  deterministic. NaN counts as -inf.

  Args:
    similarities: [T] scores.
    k: number of tasks to return.
    exclude: task indices never returned (e.g. the unseen task itself).

  Returns:
    [k] int64 numpy indices.

  Raises:
    ValueError: if fewer than k tasks remain after exclusion.
  """
  s = np.asarray(similarities, dtype=np.float64).copy()
  s[np.isnan(s)] = -np.inf
  keep = np.ones(s.shape[0], dtype=bool)
  if exclude is not None:
    keep[np.asarray(list(exclude), dtype=np.int64)] = False
  if k > int(keep.sum()) or k < 0:
    raise ValueError(f'cannot pick k={k} of {int(keep.sum())} eligible tasks')
  candidates = np.nonzero(keep)[0]
  order = np.argsort(-s[candidates], kind='stable')
  return candidates[order[:k]]
