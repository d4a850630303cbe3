"""Flags and one-line errors of the command-line tools (``bil_jax.main``, ``bil_jax.bench``).

An expected failure (a bad flag, config override or value) prints one line
``error: ...`` on stderr and exits with status 1, without a traceback.
"""
import sys


def one_line(message) -> str:
  """``message`` with all whitespace runs (newlines included) collapsed to one space."""
  return " ".join(str(message).split())


def fail(message) -> None:
  """Prints ``error: <message>`` in one line on stderr and exits with status 1."""
  print(f"error: {one_line(message)}", file=sys.stderr)
  sys.exit(1)


def bad_override(err: Exception, argv) -> None:
  """One-line error for a ``--config.a.b=v`` override that names no key or has a bad value."""
  overrides = [a for a in argv[1:] if a.startswith("--config.")]
  key = str(err).strip("'\" ")
  culprit = next((a for a in overrides if key and key in a), " ".join(overrides))
  if isinstance(err, (AttributeError, KeyError)):
    fail(f"unknown config key in {culprit} (no key {key!r})")
  fail(f"bad value in {culprit}: {type(err).__name__}: {err}")


def define_config_flag(argv) -> None:
  """Defines ``--config=FILE[:arg]`` (locked; ``--config.a.b=v`` overrides, read from
  ``argv`` as the flag is defined), with a one-line error for a bad override."""
  from ml_collections import config_flags  # pylint: disable=import-outside-toplevel
  try:
    config_flags.DEFINE_config_file("config", "configs/synthetic.py", "Experiment config file.",
                                    lock_config=True)
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    bad_override(e, argv)


def parse_flags(argv):
  """absl flag parsing with one-line errors for bad flags, config overrides and a missing
  config file; the arguments absl leaves over."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  try:
    rest = flags.FLAGS(argv)
    if "config" in flags.FLAGS:
      flags.FLAGS.config.keys()  # loads the config file: a missing one fails here
    return rest
  except flags.Error as e:
    fail(e)
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    bad_override(e, argv)
  except OSError as e:  # --config file missing or unreadable
    fail(f"--config: {e}")
