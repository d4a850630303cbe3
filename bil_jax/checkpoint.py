"""Orbax checkpoints of training states, with fallback to an earlier step.

A state is a pytree of arrays (``{'step', 'params', 'opt_state', ...}``). Saves are
Orbax's atomic saves (written to a temporary directory, then renamed), so a process
killed mid-save leaves the previous checkpoint intact. Restoring takes the newest
checkpoint that can be read; an unreadable one gives a warning and the one before it
is tried.
"""
import logging
import os
from typing import Any, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp


class Checkpointer:
  """A thin wrapper around ``ocp.CheckpointManager`` for one training phase."""

  def __init__(self, directory: str, max_to_keep: int = 3):
    self.directory = os.path.abspath(directory)
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))

  def all_steps(self) -> list:
    return sorted(self._manager.all_steps())

  def latest_step(self) -> Optional[int]:
    steps = self.all_steps()
    return steps[-1] if steps else None

  def save(self, step: int, state: Any) -> None:
    """Saves ``state`` as checkpoint ``step`` (no-op if that step exists) and waits."""
    if step in self._manager.all_steps():
      return
    self._manager.save(step, args=ocp.args.StandardSave(state))
    self._manager.wait_until_finished()

  def restore(self, target: Any, step: Optional[int] = None):
    """Restores the newest readable checkpoint (at most ``step``) shaped like ``target``.

    Returns:
      (state, step), or (None, None) when there is no checkpoint at all.
    """
    steps = [s for s in self.all_steps() if step is None or s <= step]
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    for s in reversed(steps):
      try:
        state = self._manager.restore(s, args=ocp.args.StandardRestore(abstract))
        return state, s
      except Exception as e:  # pylint: disable=broad-except
        logging.warning("Checkpoint %d in %s cannot be read (%s: %s); trying the previous one.",
                        s, self.directory, type(e).__name__, str(e).splitlines()[0][:200])
    if steps:
      raise RuntimeError(f"no checkpoint in {self.directory} can be read (steps {steps})")
    return None, None

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


def to_host(tree: Any) -> Any:
  """Fetches a (replicated) pytree to host numpy arrays."""
  return jax.tree.map(np.asarray, jax.device_get(tree))
