"""The expected failures of a run: ``main`` prints their one-line message and exits 1.

Every other exception is a bug and keeps its traceback.
"""


class TrainingError(RuntimeError):
  """An expected failure of a run; ``str(err)`` is one line (main prints it, exit 1)."""


class NonFiniteError(TrainingError):
  """A NaN or Inf loss or update with ``config.nonfinite='stop'``."""


class WorkdirError(TrainingError):
  """The workdir cannot be used: not writable, or made by a different config."""
