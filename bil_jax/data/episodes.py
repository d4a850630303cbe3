"""Episode sampling on the host (numpy): task -> support set T(tr) / query set T(te).

A batch of pairs (``Pairs``) is a dict of numpy arrays
  'map':   int32   [n, H, W]     class ids (one-hot encoding is the model's job),
  'image': float32 [n, H, W, 3]  target image in [-1, 1],
  'ref':   float32 [n, H, W, 3]  reference image for PG² (Sec. 5.3) in [-1, 1].

Support and query pairs of an episode are disjoint pairs of one task.  A task
with fewer than shots + queries pairs is an error, unless ``reuse_pairs=True``
(pass ``cfg.data.get('reuse_pairs', False)``; for datasets such as BDD100K
where a task is a single pair): the task's pairs are then taken in a random
order and repeated cyclically, so queries prefer pairs outside the support and
augmentation makes repeated pairs differ.

Reference images.  The paper (Sec. 5.3) has one pair per instance and makes
the reference from the ground-truth image by random horizontal flip (skipped
when ``aug_cfg.flip_reference`` is False, footnote 3), crop and rotation:
  * support pairs (and the pooled pairs of ``sample_pairs``): ref = such an
    augmentation of the pair's own (unaugmented) target image; with
    ``aug_cfg.reference_source == 'other'``, of ANOTHER pair's image of the same
    task (another support pair; for pooled pairs another pair of the pair's task),
    as in the original PG² where the condition image is another photo of the same
    person: then the reference never shows the target's own layout, in training as
    at test time;
  * query pairs: ref = such an augmentation of a random SUPPORT image of the
    same task -- never the query's own target, which would leak the ground
    truth into the input at IS test / evaluation time.

Augmentation of the pairs themselves (joint flip / crop / rotation of map and
image, :mod:`bil_jax.data.augment`) is applied to the support pairs always
and to the query pairs when ``augment_query`` is True (False for evaluation:
query maps and images are then the task's pairs untouched).

Randomness comes only from the ``np.random.Generator`` passed in; use
:func:`episode_rng` to derive one deterministically from (seed, step, stream).
"""
import dataclasses
from typing import Any, Dict, Optional, Sequence

import numpy as np

from bil_jax.data import augment as augment_lib
from bil_jax.data import tasks as tasks_lib

Pairs = Dict[str, np.ndarray]
Episode = Dict[str, Pairs]


def episode_rng(seed: int, step: int, stream: int = 0) -> np.random.Generator:
  """A Generator determined by (seed, step, stream) alone.

  Use different streams for independent consumers at the same step (e.g.
  0 meta-training episodes, 1 pre-training pairs, 2 evaluation).
  """
  entropy = [int(v) % (1 << 64) for v in (seed, step, stream)]
  return np.random.default_rng(np.random.SeedSequence(entropy))


def to_float(images: np.ndarray) -> np.ndarray:
  """uint8 [..., 3] -> float32 in [-1, 1]."""
  return images.astype(np.float32) / np.float32(127.5) - np.float32(1)


def _make_pairs(maps: np.ndarray, images: np.ndarray, ref_sources: np.ndarray,
                rng: np.random.Generator, aug_cfg: Any, augment: bool) -> Pairs:
  """Builds Pairs from uint8 maps [n,H,W], images and reference sources."""
  maps = maps.astype(np.int32)
  images = to_float(images)
  if augment:
    maps, images = augment_lib.augment_pairs(maps, images, rng, aug_cfg)
  ref = augment_lib.augment_reference(to_float(ref_sources), rng, aug_cfg)
  return {'map': maps, 'image': images, 'ref': ref}


def split_indices(num_pairs: int, shots: int, queries: int, rng: np.random.Generator,
                  task_name: str = '', reuse_pairs: bool = False):
  """Random disjoint support / query indices into a task's pairs.

  Args:
    num_pairs: n_t, pairs of the task.
    shots, queries: sizes of the support and query sets.
    rng: numpy Generator.
    task_name: for the error message.
    reuse_pairs: allow n_t < shots + queries (cyclic reuse, see module doc).

  Returns:
    (support [shots], query [queries]) int64 index arrays.
  """
  need = shots + queries
  if shots < 1 or queries < 0:
    raise ValueError(f'need shots >= 1 and queries >= 0, got {shots}, {queries}')
  if num_pairs < need and not reuse_pairs:
    raise ValueError(f'task {task_name!r} has {num_pairs} pairs, fewer than shots + queries '
                     f'= {shots} + {queries} = {need} (set data.reuse_pairs=True to reuse '
                     'pairs)')
  if num_pairs < 1:
    raise ValueError(f'task {task_name!r} has no pairs')
  order = rng.permutation(num_pairs)
  idx = np.resize(order, need) if num_pairs < need else order[:need]
  return idx[:shots], idx[shots:]


def sample_episode(taskset: tasks_lib.TaskSet, t: int, shots: int, queries: int,
                   rng: np.random.Generator, aug_cfg: Any, augment_query: bool = True, *,
                   reuse_pairs: bool = False) -> Episode:
  """Samples one episode of task ``t``.

  Args:
    taskset: the tasks.
    t: task index in [0, T).
    shots: n, support pairs.
    queries: query pairs.
    rng: numpy Generator (the episode is a function of its state).
    aug_cfg: ``cfg.data.augment`` or None.
    augment_query: augment the query pairs (False at evaluation).
    reuse_pairs: see module docstring.

  Returns:
    {'support': Pairs with n = shots, 'query': Pairs with n = queries}.
  """
  maps, images = taskset.task_maps(t), taskset.task_images(t)
  sup, qry = split_indices(maps.shape[0], shots, queries, rng, taskset.names[t], reuse_pairs)
  sup_ref = sup
  if augment_lib.cfg_get(aug_cfg, 'reference_source', 'self') == 'other' and shots > 1:
    sup_ref = sup[(np.arange(shots) + rng.integers(1, shots)) % shots]
  support = _make_pairs(maps[sup], images[sup], images[sup_ref], rng, aug_cfg, augment=True)
  ref_idx = sup[rng.integers(0, shots, size=queries)]
  query = _make_pairs(maps[qry], images[qry], images[ref_idx], rng, aug_cfg, augment=augment_query)
  return {'support': support, 'query': query}


def stack(trees: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
  """Stacks nested dicts of arrays along a new leading axis."""
  first = trees[0]
  if isinstance(first, dict):
    return {k: stack([tr[k] for tr in trees]) for k in first}
  return np.stack(trees)


def sample_task_indices(num_tasks: int, meta_batch: int, rng: np.random.Generator) -> np.ndarray:
  """[M] task indices, without replacement when M <= T."""
  return rng.choice(num_tasks, size=meta_batch, replace=num_tasks < meta_batch)


def _chosen(n: int, rows) -> np.ndarray:
  """The positions ``rows`` (a slice, indices or None for all) of a batch of ``n``."""
  return np.arange(n)[slice(None) if rows is None else rows]


def sample_meta_batch(taskset: tasks_lib.TaskSet, meta_batch: int, shots: int, queries: int,
                      rng: np.random.Generator, aug_cfg: Any,
                      task_indices: Optional[Sequence[int]] = None, *, augment_query: bool = True,
                      reuse_pairs: bool = False, rows=None) -> Episode:
  """Samples the episodes of a meta-batch (all M, or the slots ``rows``) and stacks them.

  The M task indices are drawn from ``rng`` first; then slot i draws its episode from its
  own stream, ``rng.spawn(M)[i]``. A slot's episode therefore does not depend on which
  other slots are sampled: each process samples only its own slots (``rows``), and the
  meta-batch is the same for any process count.

  Args:
    taskset: the tasks.
    meta_batch: M.
    shots, queries: per-episode sizes.
    rng: numpy Generator.
    aug_cfg: ``cfg.data.augment`` or None.
    task_indices: optional [M] tasks to use (e.g. retrieved auxiliary tasks);
      drawn without replacement (with replacement if M > T) when None.
    augment_query, reuse_pairs: as in sample_episode.
    rows: the slots to sample (a slice or indices into [0, M)); None: all.

  Returns:
    {'support': Pairs, 'query': Pairs}, every leaf with a leading [R] axis (R slots):
    map int32 [R, n, H, W], image / ref float32 [R, n, H, W, 3].
  """
  if task_indices is None:
    task_indices = sample_task_indices(taskset.num_tasks, meta_batch, rng)
  elif len(task_indices) != meta_batch:
    raise ValueError(f'got {len(task_indices)} task_indices for meta_batch '
                     f'{meta_batch}')
  slot_rngs = rng.spawn(meta_batch)
  return stack([
      sample_episode(taskset, int(task_indices[i]), shots, queries, slot_rngs[i], aug_cfg,
                     augment_query, reuse_pairs=reuse_pairs) for i in _chosen(meta_batch, rows)
  ])


def sample_pairs(taskset: tasks_lib.TaskSet, batch_size: int, rng: np.random.Generator,
                 aug_cfg: Any, rows=None) -> Pairs:
  """Pooled pairs of all tasks for conventional (pre-)training (all B rows, or ``rows``).

  The B pairs are drawn uniformly over all pairs (without replacement when possible)
  from ``rng``; then row i is augmented from its own stream, ``rng.spawn(B)[i]`` (as are
  its reference and, with ``reference_source='other'``, the other pair the reference is
  made from), so each process samples only its own rows and the batch is the same for
  any process count. ref is an augmentation of each pair's own target by default.

  Returns:
    Pairs with n = the number of rows (B by default).
  """
  n = taskset.num_pairs
  picked = rng.choice(n, size=batch_size, replace=n < batch_size)
  row_rngs = rng.spawn(batch_size)
  other = augment_lib.cfg_get(aug_cfg, 'reference_source', 'self') == 'other'
  out = []
  for i in _chosen(batch_size, rows):
    row, r = picked[i:i + 1], row_rngs[i]
    refs = (taskset.images[other_rows_of_same_task(taskset.offsets, row, r)]
            if other else taskset.images[row])
    out.append(_make_pairs(taskset.maps[row], taskset.images[row], refs, r, aug_cfg, augment=True))
  return {k: np.concatenate([p[k] for p in out]) for k in out[0]}


def other_rows_of_same_task(offsets: np.ndarray, rows: np.ndarray,
                            rng: np.random.Generator) -> np.ndarray:
  """For each pair row, a uniformly random OTHER row of the same task.

  A row of a single-pair task maps to itself.  offsets: int [T + 1]; rows: int [B].
  """
  t = np.searchsorted(offsets, rows, side='right') - 1
  start, size = offsets[t], offsets[t + 1] - offsets[t]
  shift = 1 + np.floor(rng.random(rows.shape[0]) * np.maximum(size - 1, 1)).astype(np.int64)
  return np.where(size > 1, start + (rows - start + shift) % np.maximum(size, 1), rows)


@dataclasses.dataclass(frozen=True)
class Sampler:
  """The episode sampling of ``config.data``, built once (:meth:`from_config`).

  Holds the sizes, the augmentation config and the reuse rule, so call sites pass only
  the task set and the random Generator (from :mod:`bil_jax.streams`).
  """
  shots: int
  queries: int
  eval_queries: int
  augment: Any = None
  reuse_pairs: bool = False

  @classmethod
  def from_config(cls, data_cfg: Any) -> 'Sampler':
    return cls(int(data_cfg.shots), int(data_cfg.queries), int(data_cfg.eval_queries),
               data_cfg.augment, bool(data_cfg.get('reuse_pairs', False)))

  def pairs(self, taskset: tasks_lib.TaskSet, batch_size: int, rng: np.random.Generator,
            rows=None) -> Pairs:
    """Pooled pairs for pre-training: Pairs with n = batch_size (or the ``rows`` of it)."""
    return sample_pairs(taskset, batch_size, rng, self.augment, rows)

  def meta_batch(self, taskset: tasks_lib.TaskSet, meta_batch: int, rng: np.random.Generator,
                 task_indices: Optional[Sequence[int]] = None, *, augment_query: bool = True,
                 rows=None) -> Episode:
    """M training episodes stacked: leaves [M, n, ...], or [R, n, ...] for the slots
    ``rows`` (see :func:`sample_meta_batch`)."""
    return sample_meta_batch(taskset, meta_batch, self.shots, self.queries, rng, self.augment,
                             task_indices, augment_query=augment_query,
                             reuse_pairs=self.reuse_pairs, rows=rows)

  def eval_episode(self, taskset: tasks_lib.TaskSet, t: int, rng: np.random.Generator) -> Episode:
    """Task t's test episode: n shots, ``eval_queries`` raw (unaugmented) queries."""
    return sample_episode(taskset, t, self.shots, self.eval_queries, rng, self.augment,
                          augment_query=False, reuse_pairs=self.reuse_pairs)

  def eval_split(self, taskset: tasks_lib.TaskSet, t: int, rng: np.random.Generator):
    """The (support, query) indices :meth:`eval_episode` draws first from the same ``rng``."""
    return split_indices(
        taskset.task_maps(t).shape[0], self.shots, self.eval_queries, rng, taskset.names[t],
        self.reuse_pairs)
