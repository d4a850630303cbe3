"""Orbax checkpoints of training states, with fallback to an earlier step.

A state is a pytree of arrays (``{'step', 'params', 'opt_state', ...}``).

Guarantees:
* Saves are Orbax's atomic saves (written to a temporary directory, then renamed), so
  a process killed mid-save (even with SIGKILL) leaves the previous checkpoint intact;
  leftover temporary directories are removed on the next start.
* Saves are asynchronous: :meth:`Checkpointer.save` returns once the state is on the
  host; the next save, a restore and :meth:`Checkpointer.close` wait for the write.
* A state with a NaN or Inf in any floating-point leaf is never written
  (:class:`NonFiniteStateError`).
* Restoring takes the newest checkpoint that can be read. An unreadable one (truncated,
  corrupted, half-deleted) gives a warning, is moved aside to ``<directory>.unreadable/``
  (so that the run can save that step again) and the one before it is tried.
* Several processes save and restore together (Orbax multi-host; process 0 writes the
  host arrays). Process 0 alone decides which checkpoints are unreadable, by reading
  them without any collective, and tells the others; a failure of the joint restore
  after that is a CheckpointError and moves nothing.
"""
import logging
import os
import shutil
from typing import Any, Callable, Optional, Tuple

from etils import epath
import jax
import numpy as np
import orbax.checkpoint as ocp

from bil_jax import parallel

_ITEM = "default"  # the folder of a CheckpointManager step holding its one item
_NONE, _UNREADABLE = -1, -2  # restore's decisions besides a step number


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


def host_target(target: Any, metadata: Callable[[], Any]) -> Any:
  """The restore target that makes Orbax return host numpy arrays on every process: zeros
  shaped like ``target``'s leaves, or like the saved arrays (``metadata()``, a tree of
  Orbax array metadata) when ``target`` is None.

  Host arrays read the same on any device or process count (a saved device sharding
  would name devices that another run may not have).
  """
  tree = metadata() if target is None else target
  return jax.tree.map(lambda x: np.zeros(np.shape(x), np.dtype(x.dtype)), tree)


class Checkpointer:
  """A thin wrapper around ``ocp.CheckpointManager`` for one training phase."""

  def __init__(self, directory: str, max_to_keep: int = 3):
    self.directory = os.path.abspath(directory)
    self.max_to_keep = max_to_keep
    self._manager = self._new_manager()

  def _new_manager(self) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(
        self.directory,
        # Asynchronous saves: save() returns once the state is on the host and Orbax
        # writes it in a background thread; the next save, a restore and close() wait
        # for it. Saving never depends on whether a write is in flight (that differs
        # between processes, which must all save the same steps).
        options=ocp.CheckpointManagerOptions(max_to_keep=self.max_to_keep, create=True,
                                             cleanup_tmp_directories=True,
                                             enable_async_checkpointing=True,
                                             enable_should_save_is_saving_in_progress_check=False),
        item_handlers=ocp.StandardCheckpointHandler())

  def all_steps(self) -> list:
    return sorted(self._manager.all_steps())

  def latest_step(self) -> Optional[int]:
    steps = self.all_steps()
    return steps[-1] if steps else None

  def save(self, step: int, state: Any) -> None:
    """Starts saving ``state`` as checkpoint ``step`` (no-op if that step exists); Orbax
    writes it in the background (after the previous save is complete).

    The state is fetched to host numpy arrays first (replicated arrays: every process
    holds the whole state), so process 0 writes it and a run on any device or process
    count can read it. With several processes all call it together.

    Raises:
      NonFiniteStateError: ``state`` holds NaN or Inf; nothing is written.
    """
    if step in self._manager.all_steps():
      return
    state = to_host(state)
    bad = nonfinite_leaves(state)
    if bad:
      raise NonFiniteStateError(
          f"refusing to checkpoint step {step} to {self.directory}: non-finite values in "
          f"{', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}")
    self._manager.save(step, args=ocp.args.StandardSave(state), force=True)

  def _set_aside(self, step: int) -> None:
    """Moves an unreadable step to ``<directory>.unreadable/<step>`` (the caller is the
    process that decides: process 0)."""
    src = os.path.join(self.directory, str(step))
    dst = os.path.join(self.directory + ".unreadable", str(step))
    if os.path.isdir(src):
      if os.path.exists(dst):
        shutil.rmtree(dst)
      os.makedirs(os.path.dirname(dst), exist_ok=True)
      shutil.move(src, dst)

  def _read_alone(self, step: int, target: Any) -> Any:
    """Reads checkpoint ``step`` as host arrays in this process alone (no collective, so a
    failure here is the checkpoint's, never another process's)."""
    me = jax.process_index()
    alone = ocp.options.MultiprocessingOptions(primary_host=me, active_processes={me})
    handler = ocp.StandardCheckpointHandler(multiprocessing_options=alone)
    path = os.path.join(self.directory, str(step), _ITEM)
    reader = ocp.Checkpointer(handler, multiprocessing_options=alone)
    try:
      return reader.restore(
          path, args=ocp.args.StandardRestore(
              host_target(target, lambda: handler.metadata(epath.Path(path)).tree)))
    finally:
      reader.close()

  def _first_readable(self, target: Any, step: Optional[int]) -> Tuple[int, Any, bool]:
    """(newest readable step at most ``step``, its state, whether any step was set aside);
    the step is :data:`_NONE` if there are no checkpoints, :data:`_UNREADABLE` if none
    can be read. Unreadable steps are moved aside (:meth:`_set_aside`)."""
    steps = [s for s in self.all_steps() if step is None or s <= step]
    moved = False
    for s in reversed(steps):
      try:
        return s, self._read_alone(s, target), moved
      except Exception as e:  # pylint: disable=broad-except
        logging.warning(
            "Checkpoint %d in %s cannot be read (%s: %s); moving it to %s and "
            "trying the previous one.", s, self.directory,
            type(e).__name__, (str(e).splitlines() or [""])[0][:200],
            self.directory + ".unreadable")
        self._set_aside(s)
        moved = True
    return (_UNREADABLE if steps else _NONE), None, moved

  def restore(self, target: Any = None, step: Optional[int] = None):
    """Restores the newest readable checkpoint (at most ``step``) shaped like ``target``
    (None: as saved, e.g. to read its parameters without building the optimizer), as host
    (numpy) arrays.

    With several processes all call it together: process 0 alone reads the candidates,
    newest first, and sets unreadable ones aside; it tells the others which step it read,
    and all restore that step together through Orbax. A failure of that collective
    restore is an error; it moves nothing.

    Returns:
      (state, step), or (None, None) when there is no checkpoint at all.

    Raises:
      CheckpointError: there are checkpoints but none can be read, or a process could not
        restore the step process 0 read.
    """
    self._manager.wait_until_finished()
    state = None
    if jax.process_index() == 0:
      chosen, state, moved = self._first_readable(target, step)
    else:
      chosen, moved = _NONE, False
    chosen, moved = (int(v) for v in parallel.broadcast_from_main([chosen, moved]))
    if moved:
      # A manager whose steps were moved keeps stale metadata: start afresh. (The old one
      # is dropped, not closed: closing it after a failed read logs errors.)
      self._manager = self._new_manager()
    if chosen == _NONE:
      return None, None
    if chosen == _UNREADABLE:
      raise CheckpointError(f"no checkpoint in {self.directory} can be read (moved to "
                            f"{self.directory}.unreadable)")
    if jax.process_count() > 1:
      try:
        state = self._manager.restore(
            chosen, args=ocp.args.StandardRestore(
                host_target(target, lambda: self._manager.item_metadata(chosen).tree)))
      except Exception as e:  # pylint: disable=broad-except
        raise CheckpointError(
            f"process {jax.process_index()} could not restore checkpoint {chosen} of "
            f"{self.directory} with the others ({type(e).__name__}: "
            f"{(str(e).splitlines() or [''])[0][:200]}); process 0 read it, nothing was "
            "moved") from e
    return state, chosen

  def close(self) -> None:
    """Waits for the save in flight, if any, and releases the manager (idempotent)."""
    if self._manager is not None:
      self._manager.wait_until_finished()
      self._manager.close()
      self._manager = None


def latest_step(directory: str) -> Optional[int]:
  """The newest checkpoint step in ``directory`` (None if it has none or does not exist)."""
  if not os.path.isdir(directory):  # (a Checkpointer would create it)
    return None
  ckpt = Checkpointer(directory)
  try:
    return ckpt.latest_step()
  finally:
    ckpt.close()


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
    mode = {"pretrain": "pretrain", "meta": "metatrain"}.get(phase, phase)
    raise FileNotFoundError(f"no {phase} checkpoint in {directory}; run --mode={mode} first")
  return params


def to_host(tree: Any) -> Any:
  """Fetches a (replicated) pytree to host numpy arrays."""
  return jax.tree.map(np.asarray, jax.device_get(tree))
