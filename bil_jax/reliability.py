"""What makes a run safe to interrupt and rerun: error types, preemption, workdir checks.

* :class:`Preempted` and :class:`PreemptionSignals`: SIGTERM/SIGINT stop a phase after
  its current step, which is checkpointed (the loop, :mod:`bil_jax.loop`); ``main`` exits
  with :data:`PREEMPTED_EXIT_CODE` and the same command resumes.
* :func:`check_workdir`: a workdir made by a different config is refused (or, with
  ``config.overwrite``, its runs are deleted); :func:`record_config` writes the config a
  workdir was made by.
* :class:`TrainingError` and its subclasses are expected failures: ``main`` prints their
  one-line message and exits with status 1.
"""
import fnmatch
import glob
import json
import logging
import os
import shutil
import signal
import threading

import jax
import numpy as np

from bil_jax import config_lib, io_utils

# Exit status of a run stopped by SIGTERM/SIGINT after checkpointing (EX_TEMPFAIL: rerun
# the same command to resume).
PREEMPTED_EXIT_CODE = 75
CONFIG_FILE = "config.json"
# Config keys that may change between runs sharing a workdir: they change neither the
# training trajectory nor what a checkpoint holds (fnmatch patterns on dotted keys).
RESUMABLE_KEYS = ("overwrite", "nonfinite", "compilation_cache", "meta.num_hosts",
                  "meta.mesh_shape", "pretrain.steps", "meta.steps", "*.log_every", "*.image_every",
                  "*.checkpoint_every", "eval.*")
# Folders a run writes into its workdir (config.overwrite deletes them).
RUN_FOLDERS = ("pretrain", "meta", "xplus", "eval")
# Also deleted: the X+ learning-rate runs of --mode=tune (WORKDIR/xplus_lr<i>) and their choice.
RUN_PATTERNS = ("xplus_lr*", "xplus_tuning.json")
NONFINITE_MODES = ("skip", "stop")


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


def _jax_preemption_service() -> bool:
  """Whether JAX's multi-host preemption service runs in this process (several processes
  joined by ``jax.distributed.initialize`` with ``jax_enable_preemption_service`` on)."""
  if jax.process_count() == 1:
    return False
  from jax._src import distributed  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  return distributed.global_state.preemption_sync_manager is not None


class PreemptionSignals:
  """Context manager: SIGTERM/SIGINT set ``received`` (the signal number) instead of acting.

  The loop checks :meth:`any_host_received` after every step, checkpoints and raises
  :class:`Preempted`. A second signal restores the previous handlers and acts as usual
  (SIGINT raises KeyboardInterrupt, SIGTERM terminates). Outside the main thread, where
  Python cannot install handlers, it does nothing.

  With several processes, SIGTERM is JAX's preemption notice instead: its preemption
  service (started by ``jax.distributed.initialize``, which installs its own SIGTERM
  handler) tells every process, and :func:`jax.experimental.multihost_utils.\
reached_preemption_sync_point` is true on all of them at the same step, with no
  collective per step. SIGINT then keeps Python's default (it stops that process at once;
  the others fail at their next collective). Where the service is off
  (``jax_enable_preemption_service=False``), our handlers are installed as with one
  process, and the processes allgather their flags after every step.
  """

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.received = None
    self._old = {}
    self._service = _jax_preemption_service()

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
    if threading.current_thread() is threading.main_thread() and not self._service:
      for sig in self.SIGNALS:
        self._old[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc):
    self._restore()
    return False

  def any_host_received(self, sync_step: int) -> bool:
    """Whether any process got a signal (all processes must stop at the same step).

    ``sync_step``: the step just done, numbered across the phases of a run so that it
    grows by one per step on every process and is at least the checkpoint step (Orbax's
    checkpoint manager reports its steps to the same preemption service): pre-training
    step s is s, meta-training step s is ``pretrain.steps`` + s.
    """
    if jax.process_count() == 1:
      return self.received is not None
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    if self._service:
      if multihost_utils.reached_preemption_sync_point(int(sync_step)):
        self.received = signal.SIGTERM
        logging.warning("preemption notice: all processes stop at this step (sync point "
                        "%d) and checkpoint it.", sync_step)
        return True
      return False
    flags = multihost_utils.process_allgather(np.asarray(self.received is not None))
    return bool(np.any(flags))


def config_differences(old: dict, new: dict) -> list:
  """Dotted keys whose values differ, ignoring :data:`RESUMABLE_KEYS`."""
  keys = sorted(set(old) | set(new))
  return [k for k in keys if old.get(k, "<unset>") != new.get(k, "<unset>")
          and not any(fnmatch.fnmatchcase(k, p) for p in RESUMABLE_KEYS)]


def check_workdir(config, workdir: str) -> None:
  """Checks that ``workdir`` was made by this config (or is new); writes nothing unless it
  overwrites. Whether it can be created at all is checked by :mod:`bil_jax.validate`.

  Raises WorkdirError if its ``config.json`` comes from a config that differs in a key
  outside :data:`RESUMABLE_KEYS`. With ``config.overwrite=True`` the latter deletes the
  workdir's run folders (:data:`RUN_FOLDERS`) and ``config.json`` instead, so the run
  starts afresh.
  """
  if not workdir:
    raise WorkdirError("--workdir is empty")
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.isfile(path):
    return
  with open(path) as f:
    try:
      old = json.load(f)
    except json.JSONDecodeError as e:
      raise WorkdirError(f"{path}: unreadable ({e}); delete it or use another workdir") from None
  new = config_lib.flat_config(config)
  diff = config_differences(old, new)
  if not diff:
    return
  shown = "; ".join(f"{k}: {old.get(k, '<unset>')!r} -> {new.get(k, '<unset>')!r}"
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
    for pattern in RUN_PATTERNS:
      for found in glob.glob(os.path.join(workdir, pattern)):
        if os.path.isdir(found):
          shutil.rmtree(found, ignore_errors=True)
        else:
          os.remove(found)
    os.remove(path)


def record_config(config, workdir: str) -> None:
  """Writes ``WORKDIR/config.json`` (atomically, process 0) for :func:`check_workdir`."""
  if jax.process_index() == 0:
    io_utils.write_json(os.path.join(workdir, CONFIG_FILE), config_lib.flat_config(config))
