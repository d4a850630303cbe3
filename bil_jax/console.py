"""What a run prints: library chatter kept out, short lines for the user.

At the default ``--verbosity=0`` a run's log is the project's own lines (phase starts,
compile notes, rounded metric lines with ETA, warnings and errors) in the format
``HH:MM:SS message``; TensorFlow's and XLA's C++ start-up lines, JAX's TPU probe, TFDS's
dataset-building notes and progress bars, Orbax's and clu's per-write lines are dropped.
``--verbosity=1`` (or higher) keeps everything, in absl's own format.
"""
import glob
import logging
import math
import os
from typing import Mapping

# C++ logs of TensorFlow, XLA and gRPC: warnings and errors only.
QUIET_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2", "GRPC_VERBOSITY": "ERROR", "GLOG_minloglevel": "2"}
# Source paths whose records below WARNING are dropped (below ERROR for TFDS, whose
# 'Using custom data configuration' is a warning).
_CHATTY = ("orbax", "jax/_src", "clu/", "matplotlib", "tensorflow/")
_CHATTY_WARNINGS = ("tensorflow_datasets",)


def quiet_libraries() -> None:
  """Sets :data:`QUIET_ENV` (TensorFlow, which only preparing a dataset imports, then starts
  without its C++ start-up lines) and turns off TFDS's progress bars and download notes.

  Call before anything imports TensorFlow, JAX's backends or TFDS.
  """
  for key, value in QUIET_ENV.items():
    os.environ.setdefault(key, value)
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  tfds.disable_progress_bar()
  builder = tfds.core.DatasetBuilder
  # 'Downloading and preparing dataset Unknown size' and 'Dataset ... prepared to' are
  # printed on stdout; the project's data loaders say what they build.
  for name in ("_log_download_bytes", "_log_download_done"):
    if hasattr(builder, name):
      setattr(builder, name, lambda self: None)


class QuietFilter(logging.Filter):
  """Drops the INFO records of chatty libraries (:data:`_CHATTY`) and TFDS's warnings."""

  def filter(self, record: logging.LogRecord) -> bool:
    path = record.pathname.replace(os.sep, "/")
    if any(c in path for c in _CHATTY_WARNINGS):
      return record.levelno >= logging.ERROR
    return record.levelno >= logging.WARNING or not any(c in path for c in _CHATTY)


class ShortFormatter(logging.Formatter):
  """``HH:MM:SS message``; warnings and errors say so."""

  def __init__(self):
    super().__init__("%(asctime)s %(message)s", "%H:%M:%S")

  def format(self, record: logging.LogRecord) -> str:
    text = super().format(record)
    if record.levelno >= logging.WARNING:
      stamp, _, message = text.partition(" ")
      text = f"{stamp} {record.levelname.lower()}: {message}"
    return text


def configure(verbosity: int) -> None:
  """What a command line entry point calls first: at ``verbosity`` <= 0 quiets the libraries
  (:func:`quiet_libraries`, so before TensorFlow, TFDS or a JAX backend is loaded) and
  filters and shortens absl's log lines (:func:`setup`)."""
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  if verbosity <= 0:
    quiet_libraries()
  setup(absl_logging.get_absl_handler(), verbosity)


def setup(handler: logging.Handler, verbosity: int) -> None:
  """At ``verbosity`` <= 0, filters and shortens what ``handler`` (absl's) writes."""
  if verbosity > 0:
    return
  handler.addFilter(QuietFilter())
  handler.setFormatter(ShortFormatter())


def rounded(value: float, digits: int = 3) -> str:
  """``value`` with ``digits`` significant digits: 0.4418 -> '0.442', 1234.5 -> '1234'."""
  if not math.isfinite(value) or value == 0:
    return f"{value:g}"
  decimals = max(0, digits - 1 - int(math.floor(math.log10(abs(value)))))
  return f"{value:.{decimals}f}"


def metric_line(scalars: Mapping[str, float]) -> str:
  """'l1 0.442, d_loss 1.42, ...' in sorted key order, each rounded."""
  return ", ".join(f"{k} {rounded(float(v))}" for k, v in sorted(scalars.items()))


def duration(seconds: float) -> str:
  """'42s', '3m05s', '1h02m'."""
  s = int(round(seconds))
  if s < 60:
    return f"{s}s"
  if s < 3600:
    return f"{s // 60}m{s % 60:02d}s"
  return f"{s // 3600}h{s % 3600 // 60:02d}m"


def progress(done: int, total: int, first: int, elapsed: float, unit: str = "step",
             per_round: int = 1) -> str:
  """'step 50/1000 (5%, ETA 3m10s)' (``unit`` names what is counted): the ETA from the pace
  since step ``first`` + 1 (``elapsed`` seconds after the first step, which includes the
  compile). ``per_round``: steps that finish together (tasks run on that many devices at
  once); the pace counts whole rounds only."""
  text = f"{unit} {done}/{total} ({100 * done // max(total, 1)}%"
  rate_steps = (done - first - 1) // per_round * per_round
  if rate_steps > 0 and done < total:
    text += f", ETA {duration(elapsed / rate_steps * (total - done))}"
  return text + ")"


def outputs(workdir: str, mode: str) -> list:
  """The closing lines of a run: the files to open (those that exist) and TensorBoard."""
  found = []
  if mode in ("all", "evaluate"):
    found += [(os.path.join(workdir, "eval", "results.md"), "the results table"),
              (os.path.join(workdir, "eval", "samples.png"), "test-task samples")]
  phases = {"pretrain": ["pretrain"], "metatrain": ["meta"], "all": ["pretrain", "meta"]}
  for phase in phases.get(mode, []):
    folder = os.path.join(workdir, phase)
    grids = sorted(glob.glob(os.path.join(folder, f"{phase}_samples_*.png")))
    if grids:
      found.append((grids[-1], f"the last {phase} sample grid"))
  lines = [f"  {path}  ({what})" for path, what in found if os.path.isfile(path)]
  return (["done; open:"] + lines
          + [f"  tensorboard --logdir {workdir}  (curves, sample grids, hyperparameters)"])
