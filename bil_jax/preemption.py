"""Stopping a run at a step boundary on SIGTERM/SIGINT, on one process or several.

:class:`PreemptionSignals` turns the signals into a flag that the loop
(:mod:`bil_jax.loop`) checks after every step; it then checkpoints that step and raises
:class:`Preempted`, and ``main`` exits with :data:`PREEMPTED_EXIT_CODE` so that the same
command resumes.
"""
import logging
import signal
import threading

import jax
import numpy as np

# Exit status of a run stopped by SIGTERM/SIGINT after checkpointing (EX_TEMPFAIL: rerun
# the same command to resume).
PREEMPTED_EXIT_CODE = 75


class Preempted(Exception):
  """SIGTERM or SIGINT stopped a run after it checkpointed ``step``."""

  def __init__(self, phase: str, step: int, signum: int):
    self.phase, self.step, self.signum = phase, step, signum
    super().__init__(f"{signal.Signals(signum).name} at {phase} step {step}: checkpoint "
                     f"saved; rerun the same command to resume")


def _jax_preemption_service() -> bool:
  """Whether JAX's multi-host preemption service runs in this process: several processes
  joined by ``jax.distributed.initialize`` while ``jax_enable_preemption_service`` was on
  (``initialize`` starts the service then; the flag is not changed during a run)."""
  return (jax.process_count() > 1 and jax.distributed.is_initialized() and
          bool(jax.config.jax_enable_preemption_service))


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
    logging.warning(
        "%s received: stopping after the current step and checkpointing it "
        "(send it again to stop at once).",
        signal.Signals(signum).name)

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
        logging.warning(
            "preemption notice: all processes stop at this step (sync point "
            "%d) and checkpoint it.", sync_step)
        return True
      return False
    flags = multihost_utils.process_allgather(np.asarray(self.received is not None))
    return bool(np.any(flags))
