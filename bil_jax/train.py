"""Conventional training (Alg. 1 lines 1-5) and BiLevel meta-training (lines 6-22).

``pretrain(config, workdir)`` trains the conventional model X (the paper's baseline and
the GP initialisation) on pairs pooled over all training tasks. ``metatrain(config,
workdir)`` starts from its checkpoint (or from scratch) and alternates IS adaptation and
GP updates with the configured meta-gradient estimator, data parallel over tasks.

Both write to ``WORKDIR/<phase>/``: TensorBoard summaries (clu), Orbax checkpoints in
``checkpoints/`` (resumed automatically), and PNG sample grids. Every random choice is
a function of ``config.seed`` and the step number, so a resumed run continues exactly
as an uninterrupted one would.

Reliability (docs/reliability.md): SIGTERM/SIGINT checkpoint the current step and raise
:class:`Preempted`; a non-finite loss or update is skipped (``config.nonfinite='skip'``,
counted in the checkpointed ``nonfinite_skips`` and logged) or stops the run with
:class:`NonFiniteError` ('stop'); a workdir made by a different config is refused
(:func:`check_workdir`) unless ``config.overwrite``.
"""
import fnmatch
import functools
import json
import logging
import os
import shutil
import signal
import threading
from typing import Any, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from clu import metric_writers
from clu import periodic_actions

from bil_jax import adapt, builders, checkpoint, gan, meta, parallel, visualize
from bil_jax.data import episodes, loading

# Independent random streams of episode_rng(seed, step, stream).
PRETRAIN_STREAM, META_STREAM, HELDOUT_STREAM = 1, 2, 3
# jax.random.fold_in tags for the per-phase dropout keys.
PRETRAIN_KEY, META_KEY, HELDOUT_KEY = 11, 12, 14
HELDOUT_TASKS = 8
# Exit status of a run stopped by SIGTERM/SIGINT after checkpointing (EX_TEMPFAIL: rerun
# the same command to resume).
PREEMPTED_EXIT_CODE = 75
CONFIG_FILE = "config.json"
# Config keys that may change between runs sharing a workdir: they change neither the
# training trajectory nor what a checkpoint holds (fnmatch patterns on dotted keys).
RESUMABLE_KEYS = ("overwrite", "nonfinite", "compilation_cache", "meta.num_hosts", "pretrain.steps", "meta.steps",
                  "*.log_every", "*.image_every", "*.checkpoint_every", "eval.*")
# Folders a run writes into its workdir (config.overwrite deletes them).
RUN_FOLDERS = ("pretrain", "meta", "eval")


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------


class TrainingError(RuntimeError):
  """An expected failure of a run; ``str(err)`` is one line (main prints it, exit 1)."""


class NonFiniteError(TrainingError):
  """A NaN or Inf loss or update with ``config.nonfinite='stop'``."""


class WorkdirError(TrainingError):
  """The workdir cannot be used: not writable, or made by a different config."""


class Preempted(Exception):
  """SIGTERM or SIGINT stopped a run after it checkpointed ``step``."""

  def __init__(self, phase: str, step: int, signum: int):
    self.phase, self.step, self.signum = phase, step, signum
    super().__init__(f"{signal.Signals(signum).name} at {phase} step {step}: checkpoint "
                     f"saved; rerun the same command to resume")


# ---------------------------------------------------------------------------
# Preemption signals
# ---------------------------------------------------------------------------


class PreemptionSignals:
  """Context manager: SIGTERM/SIGINT set ``received`` (the signal number) instead of acting.

  The loop checks ``received`` after every step, checkpoints and raises
  :class:`Preempted`. A second signal restores the previous handlers and acts as usual
  (SIGINT raises KeyboardInterrupt, SIGTERM terminates). Outside the main thread, where
  Python cannot install handlers, it does nothing.
  """

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.received = None
    self._old = {}

  def _handle(self, signum, frame):
    del frame
    if self.received is not None:
      self._restore()
      signal.raise_signal(signum)
      return
    self.received = signum
    logging.warning("%s received: stopping after the current step and checkpointing it "
                    "(send it again to stop at once).", signal.Signals(signum).name)

  def _restore(self):
    for sig, old in self._old.items():
      signal.signal(sig, old)
    self._old = {}

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for sig in self.SIGNALS:
        self._old[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc):
    self._restore()
    return False

  def any_host_received(self) -> bool:
    """Whether any process got a signal (all processes must stop at the same step)."""
    if jax.process_count() == 1:
      return self.received is not None
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    flags = multihost_utils.process_allgather(np.asarray(self.received is not None))
    return bool(np.any(flags))


# ---------------------------------------------------------------------------
# Non-finite guard
# ---------------------------------------------------------------------------


def all_finite(tree: Any) -> jax.Array:
  """Scalar bool: every floating-point leaf of ``tree`` is free of NaN and Inf (jittable)."""
  checks = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
            if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)]
  return jnp.all(jnp.stack(checks)) if checks else jnp.asarray(True)


def guard_nonfinite(update):
  """Makes an update skip itself when its result is not finite.

  Args:
    update: ``(params, opt_state, *args) -> (params, opt_state, metrics)``.

  Returns:
    ``(params, opt_state, skips, *args) -> (params, opt_state, skips, ok, metrics)``: when
    any loss (metric), new parameter or new optimizer state is NaN/Inf, the old
    ``params`` and ``opt_state`` are returned and the int32 counter ``skips`` grows by
    one; ``ok`` is the scalar bool of the check. ``metrics`` gains 'nonfinite_skips'.
    The selection happens inside jit (no host round trip).
  """

  def guarded(params, opt_state, skips, *args):
    new_params, new_state, metrics = update(params, opt_state, *args)
    ok = all_finite((new_params, new_state, metrics))
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)
    skips = skips + jnp.where(ok, 0, 1).astype(skips.dtype)
    return (keep(new_params, params), keep(new_state, opt_state), skips, ok,
            dict(metrics, nonfinite_skips=skips))

  return guarded


def inject_nan(batch: dict, config, done: int) -> dict:
  """TEST ONLY fault injection: NaN target images for the update producing ``done``.

  Active when ``config.debug_nan_step == done``; every 'image' leaf of ``batch`` (pairs,
  or episodes' support and query) becomes NaN, so losses and gradients are NaN.
  """
  if int(config.debug_nan_step) != done:
    return batch
  logging.warning("debug_nan_step=%d: injecting NaN target images", done)
  return {k: (inject_nan(v, config, done) if isinstance(v, dict)
              else np.full_like(v, np.nan) if k == "image" else v) for k, v in batch.items()}


def check_options(config) -> None:
  """One-line errors for reliability options with invalid values."""
  if config.nonfinite not in ("skip", "stop"):
    raise ValueError(f"nonfinite={config.nonfinite!r} is not one of ('skip', 'stop')")


def after_update(config, phase: str, done: int, ok, ckpt) -> None:
  """With ``nonfinite='stop'``, raises NonFiniteError if the update to ``done`` was not finite."""
  if config.nonfinite == "stop" and not bool(jax.device_get(ok)):
    raise NonFiniteError(
        f"non-finite loss or update at {phase} step {done} (nonfinite='stop'); last "
        f"checkpoint: step {ckpt.latest_step()}; --config.nonfinite=skip skips such updates")


def log_skips(phase: str, done: int, skips: int, last: int) -> int:
  """Warns when updates were skipped since the last report; returns ``skips``."""
  if skips > last:
    logging.warning("%s step %d: %d non-finite update(s) skipped so far", phase, done, skips)
  return skips


# ---------------------------------------------------------------------------
# Workdir safety
# ---------------------------------------------------------------------------


def flat_config(config) -> dict:
  """{'a.b': value} of a ConfigDict (JSON-normalised: tuples become lists)."""
  def flat(d, prefix=""):
    out = {}
    for k, v in d.items():
      if isinstance(v, dict):
        out.update(flat(v, f"{prefix}{k}."))
      else:
        out[prefix + k] = v
    return out
  return flat(json.loads(config.to_json_best_effort()))


def config_differences(old: dict, new: dict) -> list:
  """Dotted keys whose values differ, ignoring :data:`RESUMABLE_KEYS`."""
  keys = sorted(set(old) | set(new))
  return [k for k in keys if old.get(k, "<unset>") != new.get(k, "<unset>")
          and not any(fnmatch.fnmatchcase(k, p) for p in RESUMABLE_KEYS)]


def _check_writable(workdir: str) -> None:
  """WorkdirError unless ``workdir`` is (or can be created as) a writable directory."""
  path = os.path.abspath(workdir)
  probe = path
  while not os.path.exists(probe):
    probe = os.path.dirname(probe)
  if not os.path.isdir(probe):
    raise WorkdirError(f"workdir {workdir}: {probe} is not a directory")
  if not os.access(probe, os.W_OK | os.X_OK):
    raise WorkdirError(f"workdir {workdir}: {probe} is not writable")


def check_workdir(config, workdir: str) -> None:
  """Checks that ``workdir`` can hold this run; writes nothing unless it overwrites.

  Raises WorkdirError if ``workdir`` cannot be written, or if its ``config.json`` comes
  from a config that differs in a key outside :data:`RESUMABLE_KEYS`. With
  ``config.overwrite=True`` the latter deletes the workdir's run folders
  (:data:`RUN_FOLDERS`) and ``config.json`` instead, so the run starts afresh.
  """
  if not workdir:
    raise WorkdirError("--workdir is empty")
  _check_writable(workdir)
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.isfile(path):
    return
  with open(path) as f:
    try:
      old = json.load(f)
    except json.JSONDecodeError as e:
      raise WorkdirError(f"{path}: unreadable ({e}); delete it or use another workdir") from None
  diff = config_differences(old, flat_config(config))
  if not diff:
    return
  shown = "; ".join(f"{k}: {old.get(k, '<unset>')!r} -> {flat_config(config).get(k, '<unset>')!r}"
                    for k in diff[:4]) + (" ..." if len(diff) > 4 else "")
  if not config.overwrite:
    raise WorkdirError(
        f"workdir {workdir} was made by a different config ({len(diff)} keys differ: {shown});"
        f" use another --workdir, or --config.overwrite=True to delete its runs and restart")
  logging.warning("config.overwrite: deleting the runs in %s (config differs: %s)", workdir,
                  shown)
  if jax.process_index() == 0:
    for name in RUN_FOLDERS:
      shutil.rmtree(os.path.join(workdir, name), ignore_errors=True)
    os.remove(path)


def record_config(config, workdir: str) -> None:
  """Writes ``WORKDIR/config.json`` (atomically, process 0) for :func:`check_workdir`."""
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    _write_json(os.path.join(workdir, CONFIG_FILE), flat_config(config))


def phase_dir(workdir: str, phase: str) -> str:
  return os.path.join(workdir, phase)


def _writer(logdir: str):
  return metric_writers.create_default_writer(logdir, just_logging=jax.process_index() > 0)


def _scalars(metrics: dict) -> dict:
  return {k: float(v) for k, v in jax.device_get(metrics).items()}


def heldout_episodes(config, test_tasks, num_tasks: int = HELDOUT_TASKS):
  """A fixed meta-batch of test-task episodes (no query augmentation) for monitoring."""
  n = min(num_tasks, test_tasks.num_tasks)
  return episodes.sample_meta_batch(
      test_tasks, n, config.data.shots, config.data.queries,
      episodes.episode_rng(config.seed, 0, HELDOUT_STREAM), config.data.augment,
      task_indices=list(range(n)), augment_query=False,
      reuse_pairs=bool(config.data.reuse_pairs))


def _pretrain_state(config, spec, opt, hw):
  params = builders.init_params(spec, config.seed, hw)
  return {"step": np.asarray(0, np.int64), "params": params,
          "opt_state": gan.init_opt_state(opt, params),
          "nonfinite_skips": np.asarray(0, np.int32)}


def _state(done: int, params, opt_state, skips) -> dict:
  return {"step": np.asarray(done, np.int64), "params": params, "opt_state": opt_state,
          "nonfinite_skips": skips}


def pretrain(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Conventional training of X = (G, D); returns the final {'G', 'D'} parameters.

  Raises:
    Preempted: SIGTERM/SIGINT; the current step was checkpointed.
    NonFiniteError: a non-finite update with ``config.nonfinite='stop'``.
  """
  check_options(config)
  check_workdir(config, workdir)
  train_tasks, test_tasks = loading.load_data(config, workdir)
  spec = builders.build_spec(config, train_tasks.num_classes)
  frozen = builders.load_frozen(config)
  opt = builders.pretrain_optimizer(config)
  hw = builders.image_hw(config)
  out = phase_dir(workdir, "pretrain")
  state = _pretrain_state(config, spec, opt, hw)
  record_config(config, workdir)  # inputs are valid: the run may write from here on
  ckpt = checkpoint.Checkpointer(os.path.join(out, "checkpoints"))
  restored, at = ckpt.restore(state)
  if restored is not None:
    state = restored
    logging.info("Resuming pre-training from step %d", at)
  start = int(state["step"])
  params, opt_state = state["params"], state["opt_state"]
  skips = jnp.asarray(state["nonfinite_skips"], jnp.int32)
  last_skips = int(skips)

  step_fn = jax.jit(guard_nonfinite(functools.partial(gan.gan_step, spec, opt)),
                    donate_argnums=(0, 1))
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
  signals = PreemptionSignals()
  with signals:
    for step in range(start, total):
      done = step + 1
      batch = episodes.sample_pairs(train_tasks, config.pretrain.batch_size,
                                    episodes.episode_rng(config.seed, step, PRETRAIN_STREAM),
                                    config.data.augment)
      params, opt_state, skips, ok, metrics = step_fn(
          params, opt_state, skips, inject_nan(batch, config, done),
          jax.random.fold_in(key, step), frozen)
      after_update(config, "pretrain", done, ok, ckpt)
      report(done)
      _pretrain_periodic(config, done, total, metrics, params, writer, out, spec, heldout,
                         heldout_l1, history)
      if done % config.pretrain.log_every == 0 or done == total:
        last_skips = log_skips("pretrain", done, int(skips), last_skips)
      if done % config.pretrain.checkpoint_every == 0 or done == total:
        ckpt.save(done, _state(done, params, opt_state, skips))
      if signals.any_host_received():
        ckpt.save(done, _state(done, params, opt_state, skips))
        _finish(writer, ckpt, out, history)
        raise Preempted("pretrain", done, signals.received or signal.SIGTERM)
  _finish(writer, ckpt, out, history)
  return checkpoint.to_host(params)


def _finish(writer, ckpt, out: str, history: list) -> None:
  writer.flush()
  ckpt.close()
  if history:
    _append_json(os.path.join(out, "heldout_l1.json"), history)


def _pretrain_periodic(config, done, total, metrics, params, writer, out, spec, heldout,
                       heldout_l1, history) -> None:
  """Scalars, held-out L1 and sample grids of pre-training step ``done``."""
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
  opt = builders.pretrain_optimizer(config)
  target = _pretrain_state(config, spec, opt, builders.image_hw(config))
  directory = os.path.join(phase_dir(workdir, "pretrain"), "checkpoints")
  state = None
  if os.path.isdir(directory):  # (a Checkpointer would create it)
    ckpt = checkpoint.Checkpointer(directory)
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
  """BiLevel meta-training of the GP model; returns the final {'G', 'D'} parameters.

  Raises:
    Preempted: SIGTERM/SIGINT; the current step was checkpointed.
    NonFiniteError: a non-finite update with ``config.nonfinite='stop'``.
  """
  check_options(config)
  parallel.initialize_distributed(int(config.meta.num_hosts))
  mesh = parallel.make_mesh()
  parallel.check_meta_batch(config.meta.meta_batch, mesh)
  check_workdir(config, workdir)
  train_tasks, test_tasks = loading.load_data(config, workdir)
  spec = builders.build_spec(config, train_tasks.num_classes)
  frozen = builders.load_frozen(config)
  hw = builders.image_hw(config)
  out = phase_dir(workdir, "meta")

  if config.meta.from_scratch:
    start_params = builders.init_params(spec, config.seed, hw)
  elif initial_params is not None:
    start_params = initial_params
  else:
    start_params = load_pretrained_params(config, workdir, spec)

  outer = builders.outer_optimizer(config)
  state = _state(0, start_params, outer.init(start_params), np.asarray(0, np.int32))
  loop = builders.inner_loop(config, spec)
  meta_step = jax.jit(guard_nonfinite(
      meta.make_meta_step(loop, config.meta.estimator, outer, mesh)))
  record_config(config, workdir)  # inputs are valid: the run may write from here on
  ckpt = checkpoint.Checkpointer(os.path.join(out, "checkpoints"))
  restored, at = ckpt.restore(state)
  if restored is not None:
    state = restored
    logging.info("Resuming meta-training from step %d", at)
  start = int(state["step"])

  params = parallel.replicate(mesh, state["params"])
  opt_state = parallel.replicate(mesh, state["opt_state"])
  skips = parallel.replicate(mesh, np.asarray(state["nonfinite_skips"], np.int32))
  last_skips = int(np.asarray(state["nonfinite_skips"]))
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
  signals = PreemptionSignals()
  with signals:
    for step in range(start, total):
      done = step + 1
      batch = episodes.sample_meta_batch(
          train_tasks, config.meta.meta_batch, config.data.shots, config.data.queries,
          episodes.episode_rng(config.seed, step, META_STREAM), config.data.augment,
          reuse_pairs=bool(config.data.reuse_pairs))
      batch = inject_nan(batch, config, done)
      rngs = np.asarray(meta.task_rngs(key, step, config.meta.meta_batch))
      batch_sharded = parallel.shard_tasks(mesh, jax.tree.map(lambda x: x[local], batch))
      rngs_sharded = parallel.shard_tasks(mesh, rngs[local])
      params, opt_state, skips, ok, metrics = meta_step(
          params, opt_state, skips, batch_sharded, rngs_sharded, frozen_r)
      after_update(config, "meta", done, ok, ckpt)
      report(done)
      if done % config.meta.log_every == 0 or done == total:
        scalars = _scalars(metrics)
        writer.write_scalars(done, scalars)
        logging.info("meta step %d: %s", done, scalars)
        last_skips = log_skips("meta", done, int(scalars["nonfinite_skips"]), last_skips)
      if done % config.meta.image_every == 0 or done == total:
        m, r = heldout_metrics(params)
        writer.write_scalars(done, m)
        logging.info("meta step %d held-out adaptation: %s", done, m)
        _meta_grid(writer, out, done, spec, heldout, r)
        if done == total:
          summary["end"] = m
      if done % config.meta.checkpoint_every == 0 or done == total:
        ckpt.save(done, _state(done, params, opt_state, skips))
      if signals.any_host_received():
        ckpt.save(done, _state(done, params, opt_state, skips))
        writer.flush()
        ckpt.close()
        raise Preempted("meta", done, signals.received or signal.SIGTERM)
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
