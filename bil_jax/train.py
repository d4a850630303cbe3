"""Conventional training (Alg. 1 lines 1-5) and BiLevel meta-training (lines 6-22).

``pretrain(config, workdir)`` trains the conventional model X (the paper's baseline and
the GP initialisation) on pairs pooled over all training tasks. ``metatrain(config,
workdir)`` starts from its checkpoint (or from scratch) and alternates IS adaptation and
GP updates with the configured meta-gradient estimator, data parallel over tasks.

Both write to ``WORKDIR/<phase>/``: TensorBoard summaries (clu), Orbax checkpoints in
``checkpoints/`` (resumed automatically), and PNG sample grids. Every random choice is
a function of ``config.seed`` and the step number, so a resumed run continues exactly
as an uninterrupted one would.
"""
import functools
import json
import logging
import os
import time
from typing import Any, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from clu import metric_writers
from clu import periodic_actions

from bil_jax import adapt, checkpoint, experiment, gan, meta, parallel, visualize
from bil_jax.data import episodes, registry

# Independent random streams of episode_rng(seed, step, stream).
PRETRAIN_STREAM, META_STREAM, HELDOUT_STREAM = 1, 2, 3
# jax.random.fold_in tags for the per-phase dropout keys.
PRETRAIN_KEY, META_KEY, HELDOUT_KEY = 11, 12, 14
HELDOUT_TASKS = 8


def phase_dir(workdir: str, phase: str) -> str:
  return os.path.join(workdir, phase)


def _writer(logdir: str):
  return metric_writers.create_default_writer(logdir, just_logging=jax.process_index() > 0)


def _scalars(metrics: dict) -> dict:
  return {k: float(v) for k, v in jax.device_get(metrics).items()}


def load_data(config: ml_collections.ConfigDict, workdir: str):
  """(train TaskSet, test TaskSet) of ``config.data``, checked against the config."""
  train_tasks = registry.load_tasks(config.data, "train", workdir)
  test_tasks = registry.load_tasks(config.data, "test", workdir)
  for ts, split in ((train_tasks, "train"), (test_tasks, "test")):
    if tuple(ts.image_hw) != experiment.image_hw(config):
      raise ValueError(f"data split {split!r} has images of size {tuple(ts.image_hw)} but "
                       f"data.image_height/width say {experiment.image_hw(config)}")
    if ts.num_classes != config.data.num_classes:
      raise ValueError(f"data split {split!r} has {ts.num_classes} classes but "
                       f"data.num_classes={config.data.num_classes}")
  return train_tasks, test_tasks


def heldout_episodes(config, test_tasks, num_tasks: int = HELDOUT_TASKS):
  """A fixed meta-batch of test-task episodes (no query augmentation) for monitoring."""
  n = min(num_tasks, test_tasks.num_tasks)
  return episodes.sample_meta_batch(
      test_tasks, n, config.data.shots, config.data.queries,
      episodes.episode_rng(config.seed, 0, HELDOUT_STREAM), config.data.augment,
      task_indices=list(range(n)), augment_query=False,
      reuse_pairs=bool(config.data.reuse_pairs))


def _pretrain_state(config, spec, opt, hw):
  params = experiment.init_params(spec, config.seed, hw)
  return {"step": np.asarray(0, np.int64), "params": params,
          "opt_state": gan.init_opt_state(opt, params)}


def pretrain(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Conventional training of X = (G, D); returns the final {'G', 'D'} parameters."""
  train_tasks, test_tasks = load_data(config, workdir)
  spec = experiment.build_spec(config, train_tasks.num_classes)
  frozen = experiment.load_frozen(config)
  opt = experiment.gan_optimizer(config)
  hw = experiment.image_hw(config)
  out = phase_dir(workdir, "pretrain")
  ckpt = checkpoint.Checkpointer(os.path.join(out, "checkpoints"))
  state = _pretrain_state(config, spec, opt, hw)
  restored, at = ckpt.restore(state)
  if restored is not None:
    state = restored
    logging.info("Resuming pre-training from step %d", at)
  start = int(state["step"])
  params, opt_state = state["params"], state["opt_state"]

  step_fn = jax.jit(functools.partial(gan.gan_step, spec, opt), donate_argnums=(0, 1))
  heldout = jax.tree.map(lambda x: x[:, :config.data.queries],
                         heldout_episodes(config, test_tasks)["query"])
  heldout = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), heldout)

  @jax.jit
  def heldout_l1(p):
    fake = gan.generate(spec, p["G"], heldout, jax.random.PRNGKey(0), train=False)
    return jnp.mean(jnp.abs(fake - heldout["image"])), fake

  writer = _writer(out)
  total = int(config.pretrain.steps)
  report = periodic_actions.ReportProgress(num_train_steps=total, writer=writer)
  key = jax.random.fold_in(jax.random.PRNGKey(config.seed), PRETRAIN_KEY)
  history = []
  if start == 0:
    l1, _ = heldout_l1(params)
    history.append((0, float(l1)))
    writer.write_scalars(0, {"heldout_l1": float(l1)})
  for step in range(start, total):
    batch = episodes.sample_pairs(train_tasks, config.pretrain.batch_size,
                                  episodes.episode_rng(config.seed, step, PRETRAIN_STREAM),
                                  config.data.augment)
    params, opt_state, metrics = step_fn(params, opt_state, batch,
                                         jax.random.fold_in(key, step), frozen)
    done = step + 1
    report(done)
    if done % config.pretrain.log_every == 0 or done == total:
      scalars = _scalars(metrics)
      l1, fake = heldout_l1(params)
      scalars["heldout_l1"] = float(l1)
      history.append((done, float(l1)))
      writer.write_scalars(done, scalars)
      logging.info("pretrain step %d: %s", done, scalars)
    if done % config.pretrain.image_every == 0 or done == total:
      _, fake = heldout_l1(params)
      _write_grid(writer, out, "pretrain_samples", done, spec.num_classes,
                  [visualize.colorize(heldout["map"], spec.num_classes)]
                  + ([heldout["ref"]] if spec.uses_reference else [])
                  + [np.asarray(fake), heldout["image"]], rows=10)
    if done % config.pretrain.checkpoint_every == 0 or done == total:
      ckpt.save(done, {"step": np.asarray(done, np.int64), "params": params,
                       "opt_state": opt_state})
  writer.flush()
  ckpt.close()
  if history:
    _append_json(os.path.join(out, "heldout_l1.json"), history)
  return checkpoint.to_host(params)


def _append_json(path: str, history: list) -> None:
  """Merges (step, value) pairs into a JSON file (keeps a resumed run's earlier values)."""
  old = {}
  if os.path.exists(path):
    with open(path) as f:
      old = {int(k): v for k, v in json.load(f).items()}
  old.update(dict(history))
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump({str(k): old[k] for k in sorted(old)}, f, indent=1)
  os.replace(tmp, path)


def _write_grid(writer, out: str, name: str, step: int, num_classes: int, columns: list,
                rows: int = 10) -> None:
  image = visualize.grid([np.asarray(c)[:rows] for c in columns])
  if jax.process_index() == 0:
    visualize.save_png(os.path.join(out, f"{name}_{step:07d}.png"), image)
  writer.write_images(step, {name: image[None]})


def load_pretrained_params(config, workdir: str, spec) -> dict:
  """The latest pre-training parameters of ``workdir``; a one-line error if there are none."""
  opt = experiment.gan_optimizer(config)
  target = _pretrain_state(config, spec, opt, experiment.image_hw(config))
  ckpt = checkpoint.Checkpointer(os.path.join(phase_dir(workdir, "pretrain"), "checkpoints"))
  state, _ = ckpt.restore(target)
  ckpt.close()
  if state is None:
    raise FileNotFoundError(
        f"no pre-training checkpoint in {phase_dir(workdir, 'pretrain')}; run --mode=pretrain "
        "first or set --config.meta.from_scratch=True")
  return state["params"]


def make_adaptation_eval(loop: adapt.InnerLoop):
  """Jitted (params, episodes [M,...], rng, frozen) -> query L1 before/after adaptation [M]."""

  def one(params, episode, rng, frozen):
    fake, _ = adapt.adapt_and_generate(loop, params, episode["support"], episode["query"],
                                       rng, frozen)
    before = gan.generate(loop.spec, params["G"], episode["query"], rng, train=False)
    target = episode["query"]["image"]
    return {"l1_before": jnp.mean(jnp.abs(before - target)),
            "l1_after": jnp.mean(jnp.abs(fake - target)), "fake": fake, "gp": before}

  return jax.jit(jax.vmap(one, in_axes=(None, 0, None, None)))


def metatrain(config: ml_collections.ConfigDict, workdir: str,
              initial_params: Optional[dict] = None) -> dict:
  """BiLevel meta-training of the GP model; returns the final {'G', 'D'} parameters."""
  parallel.initialize_distributed(int(config.meta.num_hosts))
  mesh = parallel.make_mesh()
  parallel.check_meta_batch(config.meta.meta_batch, mesh)
  train_tasks, test_tasks = load_data(config, workdir)
  spec = experiment.build_spec(config, train_tasks.num_classes)
  frozen = experiment.load_frozen(config)
  hw = experiment.image_hw(config)
  out = phase_dir(workdir, "meta")

  if config.meta.from_scratch:
    start_params = experiment.init_params(spec, config.seed, hw)
  elif initial_params is not None:
    start_params = initial_params
  else:
    start_params = load_pretrained_params(config, workdir, spec)

  outer = meta.make_outer_optimizer(config.meta.outer_lr, config.optim.b1, config.optim.b2)
  state = {"step": np.asarray(0, np.int64), "params": start_params,
           "opt_state": outer.init(start_params)}
  ckpt = checkpoint.Checkpointer(os.path.join(out, "checkpoints"))
  restored, at = ckpt.restore(state)
  if restored is not None:
    state = restored
    logging.info("Resuming meta-training from step %d", at)
  start = int(state["step"])

  loop = experiment.inner_loop(config, spec)
  meta_step = meta.make_meta_step(loop, config.meta.estimator, outer, mesh)
  params = parallel.replicate(mesh, state["params"])
  opt_state = parallel.replicate(mesh, state["opt_state"])
  frozen_r = parallel.replicate(mesh, frozen)

  heldout = heldout_episodes(config, test_tasks)
  evaluate_adaptation = make_adaptation_eval(loop)
  eval_key = jax.random.fold_in(jax.random.PRNGKey(config.seed), HELDOUT_KEY)

  def heldout_metrics(p):
    r = evaluate_adaptation(jax.device_get(p), heldout, eval_key, frozen)
    return {"heldout_l1_before": float(r["l1_before"].mean()),
            "heldout_l1_after": float(r["l1_after"].mean())}, r

  writer = _writer(out)
  total = int(config.meta.steps)
  report = periodic_actions.ReportProgress(num_train_steps=total, writer=writer)
  key = jax.random.fold_in(jax.random.PRNGKey(config.seed), META_KEY)
  local = parallel.local_task_slice(config.meta.meta_batch)
  summary = {}
  if start == 0:
    summary["start"], r = heldout_metrics(params)
    writer.write_scalars(0, summary["start"])
    _meta_grid(writer, out, 0, spec, heldout, r)
  for step in range(start, total):
    batch = episodes.sample_meta_batch(
        train_tasks, config.meta.meta_batch, config.data.shots, config.data.queries,
        episodes.episode_rng(config.seed, step, META_STREAM), config.data.augment,
        reuse_pairs=bool(config.data.reuse_pairs))
    rngs = np.asarray(meta.task_rngs(key, step, config.meta.meta_batch))
    batch_sharded = parallel.shard_tasks(mesh, jax.tree.map(lambda x: x[local], batch))
    rngs_sharded = parallel.shard_tasks(mesh, rngs[local])
    params, opt_state, metrics = meta_step(params, opt_state, batch_sharded, rngs_sharded,
                                           frozen_r)
    done = step + 1
    report(done)
    if done % config.meta.log_every == 0 or done == total:
      scalars = _scalars(metrics)
      writer.write_scalars(done, scalars)
      logging.info("meta step %d: %s", done, scalars)
    if done % config.meta.image_every == 0 or done == total:
      m, r = heldout_metrics(params)
      writer.write_scalars(done, m)
      logging.info("meta step %d held-out adaptation: %s", done, m)
      _meta_grid(writer, out, done, spec, heldout, r)
      if done == total:
        summary["end"] = m
    if done % config.meta.checkpoint_every == 0 or done == total:
      ckpt.save(done, {"step": np.asarray(done, np.int64), "params": params,
                       "opt_state": opt_state})
  writer.flush()
  ckpt.close()
  if summary and jax.process_index() == 0:
    _write_json(os.path.join(out, f"heldout_adaptation_{start:07d}.json"),
                dict(summary, inner_steps=loop.steps, estimator=config.meta.estimator,
                     seed=config.seed, first_step=start, last_step=total))
  return checkpoint.to_host(params)


def _write_json(path: str, obj: Any) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=1)
  os.replace(tmp, path)


def _meta_grid(writer, out, step, spec, heldout, r) -> None:
  """Held-out task 0: map, [ref], GP output, after IS adaptation, target."""
  q = jax.tree.map(lambda x: np.asarray(x[0]), heldout["query"])
  cols = [visualize.colorize(q["map"], spec.num_classes)]
  cols += [q["ref"]] if spec.uses_reference else []
  cols += [np.asarray(r["gp"][0]), np.asarray(r["fake"][0]), q["image"]]
  _write_grid(writer, out, "meta_samples", step, spec.num_classes, cols)
