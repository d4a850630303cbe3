"""Orbax checkpoints of training states, with fallback to an earlier step.

A state is a pytree of arrays (``{'step', 'params', 'opt_state', ...}``).

Guarantees:
* Saves are Orbax's atomic saves (written to a temporary directory, then renamed), so
  a process killed mid-save (even with SIGKILL) leaves the previous checkpoint intact;
  leftover temporary directories are removed on the next start.
* A state with a NaN or Inf in any floating-point leaf is never written
  (:class:`NonFiniteStateError`).
* Restoring takes the newest checkpoint that can be read. An unreadable one (truncated,
  corrupted, half-deleted) gives a warning, is moved aside to ``<directory>.unreadable/``
  (so that the run can save that step again) and the one before it is tried.
"""
import logging
import os
import shutil
from typing import Any, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp


class CheckpointError(RuntimeError):
  """A checkpoint cannot be written or none can be read; the message is one line."""


class NonFiniteStateError(CheckpointError):
  """A state to be saved holds NaN or Inf values."""


def nonfinite_leaves(tree: Any) -> list:
  """Key paths (strings) of the floating-point leaves of ``tree`` holding NaN or Inf."""
  bad = []
  for path, leaf in jax.tree_util.tree_leaves_with_path(jax.device_get(tree)):
    a = np.asarray(leaf)
    if np.issubdtype(a.dtype, np.inexact) and not np.all(np.isfinite(a)):
      bad.append(jax.tree_util.keystr(path))
  return bad


class Checkpointer:
  """A thin wrapper around ``ocp.CheckpointManager`` for one training phase."""

  def __init__(self, directory: str, max_to_keep: int = 3):
    self.directory = os.path.abspath(directory)
    self.max_to_keep = max_to_keep
    self._manager = self._new_manager()

  def _new_manager(self) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=self.max_to_keep, create=True,
                                             cleanup_tmp_directories=True))

  def all_steps(self) -> list:
    return sorted(self._manager.all_steps())

  def latest_step(self) -> Optional[int]:
    steps = self.all_steps()
    return steps[-1] if steps else None

  def save(self, step: int, state: Any) -> None:
    """Saves ``state`` as checkpoint ``step`` (no-op if that step exists) and waits.

    Raises:
      NonFiniteStateError: ``state`` holds NaN or Inf; nothing is written.
    """
    if step in self._manager.all_steps():
      return
    bad = nonfinite_leaves(state)
    if bad:
      raise NonFiniteStateError(
          f"refusing to checkpoint step {step} to {self.directory}: non-finite values in "
          f"{', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}")
    self._manager.save(step, args=ocp.args.StandardSave(state))
    self._manager.wait_until_finished()

  def _set_aside(self, step: int) -> None:
    """Moves an unreadable step to ``<directory>.unreadable/<step>`` (process 0 only)."""
    if jax.process_index() == 0:
      src = os.path.join(self.directory, str(step))
      dst = os.path.join(self.directory + ".unreadable", str(step))
      if os.path.isdir(src):
        if os.path.exists(dst):
          shutil.rmtree(dst)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.move(src, dst)
    # A manager that failed to read a step may keep stale metadata: start afresh. (The
    # failed one is dropped, not closed: closing it after a failed read logs errors.)
    self._manager = self._new_manager()

  def restore(self, target: Any = None, step: Optional[int] = None):
    """Restores the newest readable checkpoint (at most ``step``) shaped like ``target``
    (None: as saved, e.g. to read its parameters without building the optimizer).

    Returns:
      (state, step), or (None, None) when there is no checkpoint at all.

    Raises:
      CheckpointError: there are checkpoints but none can be read.
    """
    steps = [s for s in self.all_steps() if step is None or s <= step]
    abstract = (None if target is None
                else jax.tree.map(ocp.utils.to_shape_dtype_struct, target))
    for s in reversed(steps):
      try:
        state = self._manager.restore(s, args=ocp.args.StandardRestore(abstract))
        return state, s
      except Exception as e:  # pylint: disable=broad-except
        logging.warning("Checkpoint %d in %s cannot be read (%s: %s); moving it to %s and "
                        "trying the previous one.", s, self.directory, type(e).__name__,
                        (str(e).splitlines() or [""])[0][:200], self.directory + ".unreadable")
        self._set_aside(s)
    if steps:
      raise CheckpointError(f"no checkpoint in {self.directory} can be read (steps {steps}; "
                            f"moved to {self.directory}.unreadable)")
    return None, None

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


def latest_params(directory: str) -> Optional[Any]:
  """The 'params' of the newest readable checkpoint in ``directory`` (None if it has none).

  Raises:
    CheckpointError: there are checkpoints but none can be read.
  """
  if not os.path.isdir(directory):  # (a Checkpointer would create it)
    return None
  ckpt = Checkpointer(directory)
  try:
    state, _ = ckpt.restore()
  finally:
    ckpt.close()
  return None if state is None else state["params"]


def phase_params(workdir: str, phase: str) -> Any:
  """{'G', 'D'} of the newest readable checkpoint of ``WORKDIR/<phase>``; a one-line
  FileNotFoundError naming the directory and the mode to run if there is none."""
  directory = os.path.abspath(os.path.join(workdir, phase, "checkpoints"))
  params = latest_params(directory)
  if params is None:
    mode = "pretrain" if phase == "pretrain" else "metatrain"
    raise FileNotFoundError(f"no {phase} checkpoint in {directory}; run --mode={mode} first")
  return params


def to_host(tree: Any) -> Any:
  """Fetches a (replicated) pytree to host numpy arrays."""
  return jax.tree.map(np.asarray, jax.device_get(tree))
