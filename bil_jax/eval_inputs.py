"""The host side of the test phase (Alg. 2): episodes, Eq. 3 retrieval, Aux meta-batches,
the ablations' inputs and the lookups, per task, from the task's own random streams (so
the device count changes nothing). :mod:`bil_jax.evaluate` runs the rest on the devices.
"""
from typing import List

import jax
import numpy as np

from bil_jax import lookups, meta, retrieval, streams
from bil_jax.data import episodes


def num_evaluated(config, test_tasks) -> int:
  """How many test tasks are evaluated: ``eval.num_test_tasks`` (-1: all of them)."""
  n = test_tasks.num_tasks
  return n if config.eval.num_test_tasks < 0 else min(config.eval.num_test_tasks, n)


def test_episodes(config, test_tasks, num: int = -1, index_offset: int = 0) -> List[dict]:
  """One fixed episode per task 0..num-1 (-1: :func:`num_evaluated`): n support shots,
  eval_queries queries, drawn from the 'eval' stream at index_offset + t (validation
  tasks: ``streams.VAL_TASK_OFFSET``).

  Queries are the task's raw pairs. So are the support shots, unless ``eval.augment_shots``
  (then flipped/cropped/rotated as in training). 'support_maps' int32 [n,H,W] and
  'support_images' float32 [n,H,W,3] are the raw shots either way: Eq. 3 retrieval and the
  lookups use them. PG² references are made as in training (Sec. 5.3).
  """
  sampler = episodes.Sampler.from_config(config.data)
  eps = []
  for t in range(num_evaluated(config, test_tasks) if num < 0 else num):
    rng = lambda: streams.episode_rng(config.seed, "eval", index_offset + t)  # pylint: disable=cell-var-from-loop
    ep = sampler.eval_episode(test_tasks, t, rng())
    # eval_episode draws the split first, so the same generator state gives its indices.
    sup, _ = sampler.eval_split(test_tasks, t, rng())
    ep["support_maps"] = test_tasks.task_maps(t)[sup].astype(np.int32)
    ep["support_images"] = episodes.to_float(test_tasks.task_images(t)[sup])
    if not config.eval.augment_shots:
      ep["support"] = dict(ep["support"], map=ep["support_maps"], image=ep["support_images"])
    eps.append(ep)
  return eps


def retrieve_aux_tasks(support_maps: np.ndarray, train_tasks, k: int) -> np.ndarray:
  """Eq. 3: the k training tasks most similar to the support maps [n,H,W], best first."""
  sims = retrieval.task_similarity(support_maps, train_tasks.maps,
                                   retrieval.task_ids_from_offsets(train_tasks.offsets),
                                   train_tasks.num_classes, num_tasks=train_tasks.num_tasks)
  return retrieval.top_k_tasks(sims, k)


def random_aux_tasks(config, train_tasks, index: int) -> np.ndarray:
  """The Aux ablation's K = eval.aux_tasks distinct random training tasks of task
  ``index`` (its 'aux_random' stream)."""
  k = min(int(config.eval.aux_tasks), train_tasks.num_tasks)
  rng = streams.episode_rng(config.seed, "aux_random", index)
  return rng.choice(train_tasks.num_tasks, k, replace=False).astype(np.int64)


def _aux_batches(config, sampler, train_tasks, aux: np.ndarray, index: int):
  """(S = eval.aux_steps meta-batches of tasks ``aux``, leaves [S, K, ...]; the step-0
  batch, which exists also for S = 0, for the shapes and the merged ablation)."""
  batches = [
      sampler.meta_batch(train_tasks, len(aux),
                         streams.episode_rng(config.seed, "aux", streams.aux_step(index, s)),
                         task_indices=list(aux)) for s in range(max(int(config.eval.aux_steps), 1))
  ]
  steps = max(int(config.eval.aux_steps), 0)
  return jax.tree.map(lambda *b: np.stack(b)[:steps], *batches), batches[0]


def task_inputs(config, sampler, train_tasks, ep: dict, t: int, ablations: bool = True) -> dict:
  """The host side of Alg. 2 for task index t (episode ``ep``; a test task's index is its
  position, a validation task's ``streams.VAL_TASK_OFFSET`` + its position): Eq. 3
  retrieval and the Aux meta-batches, drawn from the streams of index t.

  Returns (S = eval.aux_steps, K = eval.aux_tasks, n shots, q queries):
    'support', 'query': the episode's Pairs, leaves [n, ...] and [q, ...];
    'aux': S meta-batches of the K retrieved tasks, leaves [S, K, ...];
    'aux_rngs': uint32 [S, K, 2], the task keys of each Aux step;
    'rng': uint32 [2], the key of the IS adaptations;
    'aux_tasks': int32 [K], the retrieved training tasks, best first;
    'aux_random': like 'aux', of K random training tasks (:func:`random_aux_tasks`; the
      same per-slot draws and keys): the Aux program fine-tunes on both sets;
    'aux_random_tasks': int32 [K];
  and with ``ablations`` (the test phase's other inputs):
    'merged': Pairs [K * n, ...], the support pairs of the step-0 'aux' batch (augmented as
      in training), which the merged ablation adds to the shots;
    'lookups': float32 [3, q, H, W, 3], the lookup rows' query images from the raw shots.
  """
  aux = retrieve_aux_tasks(ep["support_maps"], train_tasks, int(config.eval.aux_tasks))
  steps = max(int(config.eval.aux_steps), 0)
  key = streams.key(config.seed, "aux", t)
  batches, first = _aux_batches(config, sampler, train_tasks, aux, t)
  rngs = np.stack([np.asarray(meta.task_rngs(key, s, len(aux))) for s in range(max(steps, 1))
                  ])[:steps]
  random_tasks = random_aux_tasks(config, train_tasks, t)
  random_batches = _aux_batches(config, sampler, train_tasks, random_tasks, t)[0]
  out = {
      "support": ep["support"], "query": ep["query"], "aux": batches, "aux_rngs": rngs,
      "rng": np.asarray(streams.key(config.seed, "eval", t)), "aux_tasks": aux.astype(np.int32),
      "aux_random": random_batches, "aux_random_tasks": random_tasks.astype(np.int32)
  }
  if ablations:
    out["merged"] = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), first["support"])
    out["lookups"] = lookups.predict_all(ep["support_maps"], ep["support_images"],
                                         ep["query"]["map"])
  return out


def stack_tasks(trees: List[dict]) -> dict:
  """Per-task pytrees (leaves [...]) -> one pytree with leaves [len(trees), ...]."""
  return jax.tree.map(lambda *xs: np.stack(xs), *trees)


def padded_positions(num_tasks: int, num_devices: int) -> np.ndarray:
  """The test task at each position of the padded task list: num_tasks rounded up to a
  multiple of num_devices, the last task repeated (its extra rows are dropped)."""
  padded = -(-num_tasks // num_devices) * num_devices
  return np.minimum(np.arange(padded), num_tasks - 1)
