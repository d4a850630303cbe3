"""Finished evaluation tasks on disk, so that an interrupted evaluation resumes.

The test phase (:mod:`bil_jax.evaluate`) runs many tasks, each a long program (tuning
adapts every row at every grid setting on each validation task; the test phase adapts
every row on each test task). Each finished task's outputs are saved as one ``.npz`` file
in ``WORKDIR/eval/partial/<phase>/``, written atomically by process 0. A rerun of the
same command reads the tasks that are already done, computes only the others and ends
with the same results as an uninterrupted run; the folder is removed once ``results.json``
is written.

A stored task is used only if its fingerprint (:func:`fingerprint`: the whole config and
the evaluated parameters) equals the current one: a rerun with another ``eval.*`` setting
or retrained checkpoints recomputes every task and overwrites the stale files. Process 0
decides which tasks are done and tells the others (every process must run the same
programs); every process then reads those tasks' files (a shared filesystem, as for the
checkpoints).
"""
import hashlib
import io
import json
import logging
import os
import shutil
import zipfile
from typing import Any, Callable, Dict, Iterator, List, Sequence, Tuple

import jax
import numpy as np
from flax import traverse_util

from bil_jax import io_utils, parallel

PARTIAL_DIR = "partial"  # under WORKDIR/eval/
_FINGERPRINT = "__fingerprint__"
_SEP = "/"  # npz keys of the nested output dicts: 'scores/ssim'
Outputs = Dict[str, Any]  # one task's outputs: a nested dict of arrays
Compute = Callable[[Sequence[int]], Iterator[Tuple[int, Outputs]]]  # todo -> (t, outputs)...


def fingerprint(config_dict: dict, params: Any) -> str:
  """A hex digest of a JSON-able config dict and a pytree of host arrays (their paths,
  dtypes, shapes and bytes): equal exactly when both are equal."""
  h = hashlib.sha256(json.dumps(config_dict, sort_keys=True, default=str).encode("utf-8"))
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    a = np.ascontiguousarray(np.asarray(leaf))
    h.update(f"{jax.tree_util.keystr(path)} {a.dtype} {a.shape}".encode("utf-8"))
    h.update(a.tobytes())
  return h.hexdigest()


class TaskStore:
  """The stored outputs of one phase's tasks: ``directory/task_<t>.npz``, each a nested
  dict of arrays (e.g. ``{'scores': {'ssim': [R, q]}, ...}``) tagged with the fingerprint.
  """

  def __init__(self, directory: str, fingerprint_: str):
    self.directory, self.fingerprint = directory, fingerprint_

  def path(self, t: int) -> str:
    """The file of task ``t``."""
    return os.path.join(self.directory, f"task_{t:04d}.npz")

  def _matches(self, t: int) -> bool:
    """Whether task t's file exists, reads, and has this store's fingerprint."""
    try:
      with np.load(self.path(t), allow_pickle=False) as f:
        return str(f[_FINGERPRINT]) == self.fingerprint
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):  # absent, cut, foreign
      return False

  def done(self, num_tasks: int) -> List[int]:
    """The tasks t < num_tasks whose matching file is stored, as process 0 sees them (the
    same list on every process)."""
    if num_tasks == 0:
      return []
    mask = parallel.broadcast_from_main(
        [int(parallel.is_main_process() and self._matches(t)) for t in range(num_tasks)])
    return [t for t in range(num_tasks) if mask[t]]

  def load(self, t: int) -> Outputs:
    """Task t's outputs (a nested dict of numpy arrays)."""
    try:
      with np.load(self.path(t), allow_pickle=False) as f:
        flat = {k: f[k] for k in f.files if k != _FINGERPRINT}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
      raise OSError(f"{self.path(t)}: cannot read a finished evaluation task ({e}); delete "
                    f"{self.directory} to evaluate every task again") from e
    return traverse_util.unflatten_dict(flat, sep=_SEP)

  def save(self, t: int, outputs: Outputs) -> None:
    """Writes task t's outputs atomically (process 0 only; the others' rows are the same)."""
    if not parallel.is_main_process():
      return
    buf = io.BytesIO()
    flat = traverse_util.flatten_dict(outputs)  # {('scores', 'ssim'): array}
    bad = [k for path in flat for k in path if _SEP in k]
    if bad:
      raise ValueError(f"output keys {bad} hold {_SEP!r}, which npz keys of a nested dict cannot")
    np.savez(buf, **{_SEP.join(path): v for path, v in flat.items()},
             **{_FINGERPRINT: np.asarray(self.fingerprint)})
    io_utils.write_atomic(self.path(t), buf.getvalue())


def resume(store: TaskStore, num_tasks: int, compute: Compute,
           keep: Callable[[int, Outputs], Outputs] = lambda t, o: o,
           what: str = "tasks") -> Iterator[Tuple[int, Outputs, bool]]:
  """Yields (t, outputs, fresh) for t = 0 .. num_tasks-1 in order.

  Tasks stored in ``store`` are read back (fresh False); ``compute(todo)`` yields (t,
  outputs) for the others, in the order of the sorted list ``todo``, and each is saved as
  ``keep(t, outputs)`` (what a rerun needs of it) before it is yielded (fresh True).
  """
  stored = set(store.done(num_tasks))
  todo = [t for t in range(num_tasks) if t not in stored]
  if stored:
    logging.info("resuming: %d of %d %s already evaluated (%s)", len(stored), num_tasks, what,
                 store.directory)
  fresh = compute(todo) if todo else iter(())
  for t in range(num_tasks):
    if t in stored:
      yield t, store.load(t), False
      continue
    ft, outputs = next(fresh)
    assert ft == t, (ft, t)
    store.save(t, keep(t, outputs))
    yield t, outputs, True


def clear(eval_dir: str) -> None:
  """Removes ``eval_dir/partial`` (process 0), once the results are written."""
  if parallel.is_main_process():
    shutil.rmtree(os.path.join(eval_dir, PARTIAL_DIR), ignore_errors=True)
