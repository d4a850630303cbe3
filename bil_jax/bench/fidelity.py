"""Gradient fidelity: each estimator's meta-gradient against the exact second-order one.

On the same GP weights, tasks and per-task keys (so dropout masks agree), every estimator
gives a per-task estimate g of the meta-gradient; ``second_order`` gives g*. For G and D
separately:

  cosine      <g, g*> / (|g| |g*|)          direction (1 = exact)
  rel_error   |g - g*| / |g*|               error of the step it would take
  norm_ratio  |g| / |g*|                    scale (Reptile's theta - theta' has its own)

per task (the spread over tasks and seeds is the estimator's variance) and for the
meta-batch mean over the M tasks of a seed (what the outer optimizer sees). Only the
{'G', 'D'} parts are compared (Meta-SGD's rates are left out).
"""
import functools
from typing import Any, List, Optional

import jax
import jax.numpy as jnp
import numpy as np

from bil_jax import adapt, builders, estimators, meta
from bil_jax.adapt import NETS
from bil_jax.bench.common import EstimatorSpec
from bil_jax.data import loading

REFERENCE = EstimatorSpec("second_order")


def _flat(tree) -> jax.Array:
  """All leaves of ``tree`` [M, ...] as one [M, P] matrix."""
  leaves = jax.tree.leaves(tree)
  return jnp.concatenate([x.reshape(x.shape[0], -1) for x in leaves], axis=1)


def compare(g: jax.Array, ref: jax.Array) -> dict:
  """Per-row cosine, relative error and norm ratio of g [M,P] against ref [M,P] -> each [M]."""
  dot = jnp.sum(g * ref, axis=1)
  ng, nr = jnp.linalg.norm(g, axis=1), jnp.linalg.norm(ref, axis=1)
  tiny = jnp.finfo(g.dtype).tiny
  return {
      "cosine": dot / jnp.maximum(ng * nr, tiny),
      "rel_error": jnp.linalg.norm(g - ref, axis=1) / jnp.maximum(nr, tiny),
      "norm_ratio": ng / jnp.maximum(nr, tiny)
  }


def gradient_fn(loop: adapt.InnerLoop, est: EstimatorSpec):
  """Jitted (params, tasks [M,...], rngs [M], frozen) -> {'G': [M,P_G], 'D': [M,P_D]}:
  ``est``'s meta-gradient for each task (its meta-parameters initialised, then dropped)."""
  fn = functools.partial(estimators.resolve(est.name, est.options), loop)

  @jax.jit
  def grads(params, tasks, rngs, frozen):
    full = estimators.init_meta_parameters(est.name, params)
    g, _ = jax.vmap(fn, in_axes=(None, 0, 0, None))(full, tasks, rngs, frozen)
    return {net: _flat(g[net]) for net in NETS}

  return grads


def fidelity_samples(loop, specs: List[EstimatorSpec], params, batches: List[tuple], frozen=None,
                     log=print) -> List[dict]:
  """One record per (estimator, seed, task, net) and per (estimator, seed, 'mean', net).

  Args:
    loop: the inner loop (K, inner optimizer, remat).
    specs: the estimators; second_order is the reference (computed once per batch).
    params: {'G', 'D'} GP weights shared by every estimator.
    batches: [(seed, tasks [M,...], rngs [M])].
  """
  out = []
  fns = {est: gradient_fn(loop, est) for est in [REFERENCE] + list(specs)}  # one compile each
  for seed, tasks, rngs in batches:
    ref = fns[REFERENCE](params, tasks, rngs, frozen)
    for est in specs:
      g = ref if est == REFERENCE else fns[est](params, tasks, rngs, frozen)
      cos = {}
      for net in NETS:
        per_task = jax.device_get(compare(g[net], ref[net]))
        mean = jax.device_get(
            compare(g[net].mean(0, keepdims=True), ref[net].mean(0, keepdims=True)))
        cos[net] = float(np.mean(per_task["cosine"]))
        for t in range(g[net].shape[0]):
          out.append(
              dict(estimator=est.label, seed=seed, task=t, net=net,
                   **{k: float(v[t]) for k, v in per_task.items()}))
        out.append(
            dict(estimator=est.label, seed=seed, task="mean", net=net,
                 **{k: float(v[0]) for k, v in mean.items()}))
      log(f"fidelity seed {seed} {est.label}: mean cosine to second_order G {cos['G']:.3f}, "
          f"D {cos['D']:.3f}")
  return out


def summarize(samples: List[dict]) -> List[dict]:
  """Per (estimator, net): mean/std/min of the per-task values over tasks x seeds, and
  mean/std of the meta-batch-mean values over seeds."""
  rows = []
  keys = []
  for s in samples:
    if (s["estimator"], s["net"]) not in keys:
      keys.append((s["estimator"], s["net"]))
  for est, net in keys:
    per = [s for s in samples if (s["estimator"], s["net"]) == (est, net)]
    tasks = [s for s in per if s["task"] != "mean"]
    means = [s for s in per if s["task"] == "mean"]
    row = {
        "estimator": est, "net": net, "num_tasks": len(tasks),
        "num_seeds": len({s["seed"] for s in per})
    }
    for k in ("cosine", "rel_error", "norm_ratio"):
      v = np.array([s[k] for s in tasks])
      row[f"{k}_mean"], row[f"{k}_std"] = float(v.mean()), float(v.std())
      row[f"{k}_min"], row[f"{k}_max"] = float(v.min()), float(v.max())
      m = np.array([s[k] for s in means])
      row[f"batch_{k}_mean"], row[f"batch_{k}_std"] = float(m.mean()), float(m.std())
    rows.append(row)
  return rows


def config_batches(config, workdir: str, num_seeds: int, meta_batch: int,
                   source: str = "config") -> List[tuple]:
  """[(seed, tasks [M,...], rngs [M])] for seeds 0..num_seeds-1: the episodes and task keys
  that meta-training step ``seed`` draws: training tasks of the config's dataset
  (``source='config'``, built in ``workdir/tfds`` if needed), or random images
  (``'random'``) with those keys."""
  from bil_jax import streams  # pylint: disable=import-outside-toplevel
  from bil_jax.bench import common  # pylint: disable=import-outside-toplevel
  batches = []
  if source == "config":
    from bil_jax.data import episodes  # pylint: disable=import-outside-toplevel
    train_tasks = loading.load_data(config, workdir, ("train",)).train
    sampler = episodes.Sampler.from_config(config.data)
  for seed in range(num_seeds):
    if source == "config":
      tasks = sampler.meta_batch(train_tasks, meta_batch,
                                 streams.episode_rng(config.seed, "meta", seed))
    elif source == "random":
      tasks = common.random_tasks(config, meta_batch, seed)
    else:
      raise ValueError(f"--fidelity_data={source!r} is not one of ['config', 'random']")
    rngs = meta.task_rngs(streams.key(config.seed, "meta"), seed, meta_batch)
    batches.append((seed, tasks, rngs))
  return batches


def run_fidelity(config, specs: List[EstimatorSpec], workdir: str, num_seeds: int, meta_batch: int,
                 params: Optional[Any] = None, source: str = "config", spec=None,
                 log=print) -> dict:
  """Fidelity of ``specs`` on the config's model: {'samples', 'summary', 'weights'}.

  ``params`` are the GP weights (None: the config's random initialisation).
  """
  if spec is None:
    spec = builders.build_spec(config, config.data.num_classes)
  weights = "given"
  if params is None:
    params = builders.init_params(spec, config.seed, loading.image_hw(config))
    weights = "random initialisation"
  params = {k: params[k] for k in NETS}
  frozen = builders.load_frozen(config)
  loop = builders.inner_loop(config, spec)
  batches = config_batches(config, workdir, num_seeds, meta_batch, source)
  samples = fidelity_samples(loop, specs, params, batches, frozen, log)
  return {
      "samples": samples, "summary": summarize(samples), "weights": weights,
      "inner_steps": int(loop.steps), "meta_batch": int(meta_batch), "num_seeds": int(num_seeds),
      "data": source, "remat": adapt.remat_mode(loop.remat)
  }
