"""One training phase, start to finish: the loop pre-training and meta-training share.

:func:`run_phase` restores the phase's newest checkpoint (or starts from the initial
state), runs the step loop, and owns everything around the steps: clu summaries and
``ReportProgress``, checkpoint cadence, preemption (:class:`bil_jax.preemption.Preempted`),
non-finite accounting (the skip count lives in the optimizer state,
:mod:`bil_jax.nonfinite`; ``nonfinite='stop'`` raises NonFiniteError), the held-out probe
with its sample grids, and the final save. A phase says only what differs: a
:class:`Phase`.

A state is ``{'step': int64 [], 'params': {'G', 'D'}, 'opt_state': ...}``. Every random
choice is a function of the config's seed and the step, so a resumed phase continues
exactly as an uninterrupted one would.
"""
import contextlib
import dataclasses
import logging
import os
import signal
import time
from typing import Any, Callable, List, Optional, Sequence, Tuple

import jax
import numpy as np
from clu import metric_writers
from clu import periodic_actions

from bil_jax import (checkpoint, config_lib, console, errors, io_utils, nonfinite, preemption,
                     visualize, workdirs)

GRID_ROWS = 10


@dataclasses.dataclass
class Phase:
  """What one training phase is made of.

  Attributes:
    name: 'pretrain' | 'meta': the folder ``WORKDIR/<name>/`` and the log prefix.
    title: 'pre-training' | 'meta-training', for messages.
    schedule: ``config.pretrain`` or ``config.meta`` (steps, log_every, checkpoint_every,
      image_every).
    initial_state: the host state at step 0; also the shape that checkpoints restore to.
    sample: ``step -> batch`` (host arrays): the data of the update from ``step``.
    step: ``(params, opt_state, batch, step) -> (params, opt_state, metrics)``.
    probe: ``params -> (scalars, columns)``: held-out scalars and the image columns
      [R,H,W,3] of a sample grid.
    probe_every: steps between probes (and at step 0 of a fresh start, and the last step).
    place: puts the host state's 'params' and 'opt_state' on devices (default: the
      default device; e.g. replicated over a mesh).
    record: ``(out_dir, history, first_step, completed)`` writes the probe ``history``
      [(step, scalars)] of this run (process 0 only).
    step_offset: steps of the run before this phase's step 0 (the phases before it), so
      that the preemption sync point grows by one per step across phases.
    grid_columns: headers of the probe's image columns ("map", "output", "target").
    grid_rows: a label per row of the probe's columns (the held-out task names).
    description: what runs, for the phase's first log line ("Pix2pix 32x32, batch 5").
    compile_note: logged before the first step compiles ("" = nothing).
  """
  name: str
  title: str
  schedule: Any
  initial_state: dict
  sample: Callable[[int], Any]
  step: Callable
  probe: Callable[[Any], Tuple[dict, list]]
  probe_every: int
  place: Callable[[dict], dict] = lambda state: default_place(state)
  record: Optional[Callable[[str, List, int, bool], None]] = None
  step_offset: int = 0
  grid_columns: Sequence[str] = ()
  grid_rows: Sequence[str] = ()
  description: str = ""
  compile_note: str = ""


def default_place(state: dict) -> dict:
  """The host state's 'params' and 'opt_state' on the default device."""
  return jax.device_put({k: state[k] for k in ("params", "opt_state")})


def fault_hook(phase: str, done: int, batch: Any) -> Any:
  """Identity. TEST ONLY: tests/fault_main.py replaces it to inject faults into the batch
  of the update that produces step ``done``."""
  del phase, done
  return batch


def _due(done: int, every: int, total: int) -> bool:
  return done % int(every) == 0 or done == total


def _scalars(metrics: dict) -> dict:
  return {k: float(v) for k, v in jax.device_get(metrics).items()}


def _state(done: int, params, opt_state) -> dict:
  return {"step": np.asarray(done, np.int64), "params": params, "opt_state": opt_state}


def write_grid(writer, out: str, name: str, step: int, columns: list, headers: Sequence[str] = (),
               rows: Sequence[str] = ()) -> None:
  """A sample grid of image columns [R,H,W,3] (first :data:`GRID_ROWS` rows) as
  ``out/<name>_<step>.png`` and an image summary; with ``headers``, tiles of at least
  96 px under column headers and, with ``rows``, a label per row."""
  columns = [np.asarray(c)[:GRID_ROWS] for c in columns]
  if headers:
    image = visualize.labeled_grid(columns, headers, min_width=96,
                                   row_labels=list(rows)[:GRID_ROWS])
  else:
    image = visualize.grid(columns)
  if jax.process_index() == 0:
    io_utils.write_png(os.path.join(out, f"{name}_{step:07d}.png"), image)
  writer.write_images(step, {name: image[None]})


def hparams(config) -> dict:
  """The flat config as TensorBoard hyperparameters (lists and None as text)."""
  return {
      k: v if isinstance(v, (bool, int, float, str)) else str(v)
      for k, v in config_lib.flat_config(config).items()
  }


class _Run:
  """The mutable bookkeeping of one run of a phase (writer, checkpoints, history)."""

  def __init__(self, phase: Phase, out: str, config):
    self.phase, self.out, self.config = phase, out, config
    self.total = int(phase.schedule.steps)
    self.writer = metric_writers.create_default_writer(out, just_logging=jax.process_index()
                                                       > 0)  # process 0 writes the summaries
    self.writer.write_hparams(hparams(config))  # so curves can be filtered by them
    self.ckpt = checkpoint.Checkpointer(os.path.join(out, "checkpoints"))
    self.history: List[Tuple[int, dict]] = []
    self.skips = 0
    self.first, self.t_first = 0, None  # start step; time the first step ended

  def probe(self, done: int, params, grid: bool) -> dict:
    scalars, columns = self.phase.probe(params)
    self.history.append((done, scalars))
    if grid:
      write_grid(self.writer, self.out, f"{self.phase.name}_samples", done, columns,
                 self.phase.grid_columns, self.phase.grid_rows)
    return scalars

  def check_finite(self, done: int, opt_state) -> None:
    """Counts skipped updates; with ``nonfinite='stop'`` raises on the first one."""
    if self.config.nonfinite != "stop":
      return
    skips = nonfinite.skip_count(opt_state)
    if skips > self.skips:
      raise errors.NonFiniteError(
          f"non-finite loss or update at {self.phase.name} step {done} (nonfinite='stop'); "
          f"last checkpoint: step {self.ckpt.latest_step()}; --config.nonfinite=skip skips "
          "such updates")

  def report(self, done: int, metrics, params, opt_state) -> None:
    """Scalars, probe and grid due at step ``done``."""
    s, scalars = self.phase.schedule, {}
    if _due(done, s.log_every, self.total):
      scalars = _scalars(metrics)
      skips = nonfinite.skip_count(opt_state)
      scalars["nonfinite_skips"] = float(skips)
      if skips > self.skips:
        logging.warning("%s step %d: %d non-finite update(s) skipped so far", self.phase.name, done,
                        skips)
      self.skips = skips
    image_due = _due(done, s.image_every, self.total)
    if _due(done, self.phase.probe_every, self.total) or image_due:
      scalars.update(self.probe(done, params, grid=image_due))
    if scalars:
      self.writer.write_scalars(done, scalars)
      elapsed = time.time() - (self.t_first or time.time())
      logging.info("%s %s: %s", self.phase.name,
                   console.progress(done, self.total, self.first, elapsed),
                   console.metric_line(scalars))

  def finish(self, first_step: int, completed: bool) -> None:
    self.writer.flush()
    self.ckpt.close()
    if self.phase.record is not None and self.history and jax.process_index() == 0:
      self.phase.record(self.out, self.history, first_step, completed)


@contextlib.contextmanager
def _closing(ckpt: checkpoint.Checkpointer):
  """Closes ``ckpt`` if the steps stop on an error, so that a save in flight completes."""
  try:
    yield
  except BaseException:
    ckpt.close()
    raise


def run_phase(phase: Phase, config, workdir: str) -> dict:
  """Runs ``phase`` from its newest checkpoint (or step 0) to ``schedule.steps``.

  Returns:
    The final {'G', 'D'} parameters as host arrays.

  Raises:
    preemption.Preempted: SIGTERM/SIGINT; the current step was checkpointed.
    errors.NonFiniteError: a non-finite update with ``config.nonfinite='stop'``.
  """
  out = os.path.join(workdir, phase.name)
  workdirs.record_config(config, workdir)  # inputs are valid: the run may write now
  run = _Run(phase, out, config)
  state, at = run.ckpt.restore(phase.initial_state)
  if state is None:
    state = phase.initial_state
  start = int(state["step"])
  logging.info("%s: %d steps%s", phase.title, run.total,
               f", {phase.description}" if phase.description else "")
  if start:
    logging.info("Resuming %s from step %d", phase.title, start)
  if phase.compile_note and start < run.total:
    logging.info("%s", phase.compile_note)
  run.first = start
  placed = phase.place(state)
  params, opt_state = placed["params"], placed["opt_state"]
  run.skips = nonfinite.skip_count(opt_state)
  report = periodic_actions.ReportProgress(num_train_steps=run.total, writer=run.writer)
  if start == 0:
    scalars = run.probe(0, params, grid=True)
    run.writer.write_scalars(0, scalars)
  signals = preemption.PreemptionSignals()
  with signals, _closing(run.ckpt):
    for step in range(start, run.total):
      done = step + 1
      batch = fault_hook(phase.name, done, phase.sample(step))
      params, opt_state, metrics = phase.step(params, opt_state, batch, step)
      run.check_finite(done, opt_state)
      if done == start + 1:
        run.t_first = time.time()
      report(done)
      run.report(done, metrics, params, opt_state)
      if _due(done, phase.schedule.checkpoint_every, run.total):
        run.ckpt.save(done, _state(done, params, opt_state))
      if signals.any_host_received(phase.step_offset + done):
        run.ckpt.save(done, _state(done, params, opt_state))
        run.finish(start, completed=False)
        raise preemption.Preempted(phase.name, done, signals.received or signal.SIGTERM)
  run.finish(start, completed=True)
  return checkpoint.to_host(params)
