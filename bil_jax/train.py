"""Conventional training (Alg. 1 lines 1-5) and BiLevel meta-training (lines 6-22).

``pretrain(config, workdir)`` trains the conventional model X (the paper's baseline and
the GP initialisation) on pairs pooled over all training tasks. ``metatrain(config,
workdir)`` starts from its checkpoint (or from scratch) and alternates IS adaptation and
GP updates with the configured meta-gradient estimator, data parallel over tasks.
:mod:`bil_jax.pipeline` runs them, and the later phases, for a command's mode.

Each phase is a :class:`bil_jax.loop.Phase`: an initial state, a step function, a batch
sampler and a held-out probe; :func:`bil_jax.loop.run_phase` does the rest (checkpoints,
summaries, preemption, non-finite skips; docs/reliability.md). Outputs go to
``WORKDIR/<phase>/``.
"""
import functools
import os
from typing import Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from bil_jax import (adapt, builders, checkpoint, cpu_devices, estimators, gan, io_utils, loop,
                     meta, nonfinite, parallel, streams, visualize)
from bil_jax.data import episodes, loading

HELDOUT_TASKS = 8


def heldout_episodes(sampler: episodes.Sampler, seed: int, val_tasks,
                     num_tasks: int = HELDOUT_TASKS) -> dict:
  """A fixed meta-batch of episodes of the first ``num_tasks`` validation tasks (no query
  augmentation) for monitoring; the test split is never read before the final evaluation."""
  n = min(num_tasks, val_tasks.num_tasks)
  return sampler.meta_batch(val_tasks, n, streams.episode_rng(seed, "heldout", 0),
                            task_indices=list(range(n)), augment_query=False)


def _map_columns(spec: gan.GanSpec, pairs: dict) -> list:
  """The input columns of a sample grid: colourised map [R,H,W,3], [reference]."""
  return ([visualize.colorize(pairs["map"], spec.num_classes)] +
          ([pairs["ref"]] if spec.uses_reference else []))


def _grid_headers(spec: gan.GanSpec, *outputs: str) -> tuple:
  """Headers of :func:`_map_columns` plus ``outputs`` and the target."""
  return ("map",) + (("reference",) if spec.uses_reference else ()) + outputs + ("target",)


def _heldout_names(val_tasks, per_task: int = 1) -> list:
  """The names of the held-out tasks of :func:`heldout_episodes`, each ``per_task`` times."""
  n = min(HELDOUT_TASKS, val_tasks.num_tasks)
  return [val_tasks.names[i] for i in range(n) for _ in range(per_task)]


def _model_text(config: ml_collections.ConfigDict) -> str:
  """'pix2pix 32x32' for a phase's first log line."""
  h, w = loading.image_hw(config)
  return f"{config.model.name} {h}x{w}"


def initial_state(params: dict, opt_state) -> dict:
  """The state at step 0: parameters and a fresh optimizer state."""
  return {"step": np.asarray(0, np.int64), "params": params, "opt_state": opt_state}


def pretrain_phase(config: ml_collections.ConfigDict, train_tasks, val_tasks, spec: gan.GanSpec,
                   frozen, mesh=None, params: Optional[dict] = None,
                   stream: str = "pretrain") -> loop.Phase:
  """Pre-training: pooled pairs, one guarded GAN step each; probe: validation L1, no adaptation.

  ``params``: the parameters at step 0 (default: a fresh initialisation); ``stream``: the
  episode and key streams (:mod:`bil_jax.streams`) of the batches and the dropout (X+
  continues training on its own draws, :mod:`bil_jax.xplus`).

  Data parallel: the batch's rows [B, ...] are split over ``mesh``'s 'data' axis (default:
  :func:`parallel.data_mesh_for`: every device of every process where B allows), the
  parameters and optimizer state are replicated, and the jitted step is partitioned by
  XLA: gradients are means over the whole batch, and batch norm (``model.norm='batch'``)
  uses the whole batch's statistics. Each process samples only its own rows (each row has
  its own stream, :func:`episodes.sample_pairs`), so the run does not depend on the
  device or process count (up to float summation order).
  """
  rows = int(config.pretrain.batch_size)
  mesh = parallel.data_mesh_for(rows, "pretrain.batch_size") if mesh is None else mesh
  local = parallel.local_rows(rows)
  opt = nonfinite.skip_nonfinite(builders.pretrain_optimizer(config))
  if params is None:
    params = builders.init_params(spec, config.seed, loading.image_hw(config))
  sampler = episodes.Sampler.from_config(config.data)
  step_fn = jax.jit(functools.partial(gan.gan_step, spec, opt), donate_argnums=(0, 1))
  key = streams.key(config.seed, stream)
  heldout = heldout_episodes(sampler, config.seed, val_tasks)["query"]
  heldout = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), heldout)
  frozen_r = parallel.replicate(mesh, frozen)

  @jax.jit
  def heldout_l1(p):
    fake = gan.generate(spec, p["G"], heldout, jax.random.PRNGKey(0), train=False)
    return jnp.mean(jnp.abs(fake - heldout["image"])), fake

  def probe(p):
    l1, fake = jax.device_get(heldout_l1(p))
    return {"heldout_l1": float(l1)}, _map_columns(spec, heldout) + [fake, heldout["image"]]

  def record(out, history, first_step, completed):
    del first_step, completed
    io_utils.merge_json_series(os.path.join(out, "heldout_l1.json"),
                               [(s, v["heldout_l1"]) for s, v in history])

  def step(params, opt_state, pairs, step):
    pairs = parallel.shard_rows(mesh, pairs)
    return step_fn(params, opt_state, pairs, jax.random.fold_in(key, step), frozen_r)

  def place(state):
    return {k: parallel.replicate(mesh, state[k]) for k in ("params", "opt_state")}

  return loop.Phase(
      name="pretrain", title="pre-training", schedule=config.pretrain, initial_state=initial_state(
          params, gan.init_opt_state(opt, params)), sample=lambda step: sampler.pairs(
              train_tasks, rows, streams.episode_rng(config.seed, stream, step), rows=local),
      step=step, probe=probe, probe_every=config.pretrain.log_every, place=place, record=record,
      grid_columns=_grid_headers(spec,
                                 "output"), grid_rows=_heldout_names(val_tasks,
                                                                     int(config.data.queries)),
      description=f"{_model_text(config)}, batch {rows} from {train_tasks.num_tasks} tasks",
      compile_note="compiling the training step (first run: up to a minute; cached after)")


def make_adaptation_eval(inner: adapt.InnerLoop):
  """Jitted (params, episodes [M,...], rng, frozen) -> query L1 before/after adaptation [M]."""

  def one(params, episode, rng, frozen):
    fake, _ = adapt.adapt_and_generate(inner, params, episode["support"], episode["query"], rng,
                                       frozen)
    before = gan.generate(inner.spec, params["G"], episode["query"], rng, train=False)
    target = episode["query"]["image"]
    return {
        "l1_before": jnp.mean(jnp.abs(before - target)),
        "l1_after": jnp.mean(jnp.abs(fake - target)), "fake": fake, "gp": before
    }

  return jax.jit(jax.vmap(one, in_axes=(None, 0, None, None)))


def meta_phase(config: ml_collections.ConfigDict, train_tasks, val_tasks, spec: gan.GanSpec, frozen,
               start_params: dict, mesh) -> loop.Phase:
  """Meta-training: task-parallel meta-steps with the guarded outer optimizer; probe: held-out
  query L1 before and after IS adaptation on the first ``HELDOUT_TASKS`` validation tasks.

  Each process samples only the tasks of the meta-batch it feeds (each slot has its own
  stream, :func:`episodes.sample_meta_batch`): the meta-batch does not depend on the
  process count."""
  outer = nonfinite.skip_nonfinite(builders.outer_optimizer(config))
  inner = builders.inner_loop(config, spec)
  meta_step = meta.make_meta_step(inner, config.meta.estimator, outer, mesh,
                                  config.meta.estimator_options)
  sampler = episodes.Sampler.from_config(config.data)
  key = streams.key(config.seed, "meta")
  m = int(config.meta.meta_batch)
  local = parallel.local_task_slice(m, mesh)
  frozen_r = parallel.replicate(mesh, frozen)

  def step(params, opt_state, batch, step):
    rngs = np.asarray(meta.task_rngs(key, step, m))
    return meta_step(params, opt_state, parallel.shard_episodes(mesh, batch, m),
                     parallel.shard_tasks(mesh, rngs[local], m), frozen_r)

  heldout = heldout_episodes(sampler, config.seed, val_tasks)
  evaluate_adaptation = make_adaptation_eval(inner)
  eval_key = streams.key(config.seed, "heldout")

  def probe(p):
    r = evaluate_adaptation(jax.device_get(p), heldout, eval_key, frozen)
    q = jax.tree.map(lambda x: np.asarray(x[:, 0]), heldout["query"])  # each task's first
    return ({
        "heldout_l1_before": float(r["l1_before"].mean()),
        "heldout_l1_after": float(r["l1_after"].mean())
    }, _map_columns(spec, q) + [r["gp"][:, 0], r["fake"][:, 0], q["image"]])

  def record(out, history, first_step, completed):
    summary = {"start": v for s, v in history if s == 0}
    summary.update({"end": v for s, v in history if s == int(config.meta.steps)})
    if completed and summary:
      io_utils.write_json(
          os.path.join(out, f"heldout_adaptation_{first_step:07d}.json"),
          dict(summary, inner_steps=inner.steps, estimator=config.meta.estimator, seed=config.seed,
               first_step=first_step, last_step=int(config.meta.steps)))

  def place(state):
    return {k: parallel.replicate(mesh, state[k]) for k in ("params", "opt_state")}

  return loop.Phase(
      name="meta", title="meta-training", schedule=config.meta, initial_state=initial_state(
          start_params, outer.init(start_params)), sample=lambda s: sampler.meta_batch(
              train_tasks, m, streams.episode_rng(config.seed, "meta", s), rows=local), step=step,
      probe=probe, probe_every=config.meta.image_every, place=place, record=record,
      step_offset=int(config.pretrain.steps), grid_columns=_grid_headers(spec, "GP", "adapted"),
      grid_rows=_heldout_names(val_tasks),
      description=(f"{_model_text(config)}, {config.meta.estimator} meta-gradient through "
                   f"K={inner.steps} inner steps, {m} tasks per meta-batch"),
      compile_note="compiling the meta-step (first run: about a minute; cached after)")


def pretrain(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Conventional training of X = (G, D); returns the final {'G', 'D'} parameters.

  The caller checks the workdir first (:func:`bil_jax.pipeline.train_and_evaluate` does).

  Raises:
    Preempted: SIGTERM/SIGINT; the current step was checkpointed.
    NonFiniteError: a non-finite update with ``config.nonfinite='stop'``.
  """
  data = loading.load_data(config, workdir, loading.TRAINING_SPLITS)
  spec = builders.build_spec(config, data.train.num_classes)
  frozen = builders.load_frozen(config)
  phase = pretrain_phase(config, data.train, data.val, spec, frozen)
  return loop.run_phase(phase, config, workdir)


def meta_mesh(config: ml_collections.ConfigDict):
  """The ('tasks', 'batch') mesh of meta-training over the training devices (all, unless
  ``main`` added CPU devices for evaluation: :func:`bil_jax.cpu_devices.training_devices`),
  shaped by ``meta.mesh_shape`` or from their count; a one-line error naming the usable
  device counts."""
  return parallel.make_meta_mesh(int(config.meta.meta_batch), int(config.data.shots),
                                 int(config.data.queries), config.meta.get("mesh_shape", ""),
                                 devices=cpu_devices.training_devices())


def metatrain(config: ml_collections.ConfigDict, workdir: str,
              initial_params: Optional[dict] = None) -> dict:
  """BiLevel meta-training of the GP model; returns the final {'G', 'D'} parameters.

  Starts from ``initial_params``, else the pre-training checkpoint, else (with
  ``meta.from_scratch``) a fresh initialisation. The caller checks the workdir first.

  Raises:
    Preempted: SIGTERM/SIGINT; the current step was checkpointed.
    NonFiniteError: a non-finite update with ``config.nonfinite='stop'``.
  """
  mesh = meta_mesh(config)
  data = loading.load_data(config, workdir, loading.TRAINING_SPLITS)
  spec = builders.build_spec(config, data.train.num_classes)
  frozen = builders.load_frozen(config)
  if config.meta.from_scratch:
    start_params = builders.init_params(spec, config.seed, loading.image_hw(config))
  elif initial_params is not None:
    start_params = initial_params
  else:
    start_params = checkpoint.phase_params(workdir, "pretrain")
  # Meta-parameters the estimator learns besides G and D (Meta-SGD's rates) join the GP
  # state here, so they are updated, checkpointed and resumed with it.
  start_params = estimators.init_meta_parameters(config.meta.estimator, start_params)
  adapt.check_mask(builders.adapt_mask_patterns(config), start_params)
  phase = meta_phase(config, data.train, data.val, spec, frozen, start_params, mesh)
  return loop.run_phase(phase, config, workdir)
