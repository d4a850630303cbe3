"""Flags and one-line errors of the command-line tools (``bil_jax.main``, ``bil_jax.bench``).

An expected failure (a bad flag, config override or value) prints one line
``error: ...`` on stderr and exits with status 1, without a traceback.
"""
import re
import sys

# The --mode values of bil_jax.main (all: pretrain, metatrain, xplus, evaluate).
MODES = ("pretrain", "metatrain", "xplus", "tune", "evaluate", "all")


def one_line(message) -> str:
  """``message`` with all whitespace runs (newlines included) collapsed to one space."""
  return " ".join(str(message).split())


def fail(message) -> None:
  """Prints ``error: <message>`` in one line on stderr and exits with status 1."""
  print(f"error: {one_line(message)}", file=sys.stderr)
  sys.exit(1)


def error_text(err: BaseException) -> str:
  """The message of ``err`` as written, not its repr: a KeyError's (or a wrapped one's)
  first argument, and of a message that embeds a traceback, only its last line."""
  inner = err.args[0] if err.args and isinstance(err.args[0], BaseException) else err
  text = (str(inner.args[0]) if isinstance(inner, KeyError) and inner.args else str(inner))
  if "Traceback (most recent call last)" in text:
    lines = [line for line in text.splitlines() if line.strip()]
    head = text.split("Traceback (most recent call last)")[0].strip()
    text = f"{head} {lines[-1].strip()}" if head else lines[-1].strip()
  return text


def _missing_key(text: str) -> str:
  """The key a config KeyError names, plus its "did you mean" hint if it has one."""
  match = re.search(r'Key "([^"]+)" does not exist', text) or re.match(r"'([^']+)'", text)
  key = match.group(1) if match else text.splitlines()[0].strip("'\" ")
  hint = re.search(r'Did you mean "([^"]+)"', text)
  return f"no key {key!r}" + (f"; did you mean {hint.group(1)!r}?" if hint else "")


def bad_override(err: Exception, argv) -> None:
  """One-line error for a ``--config.a.b=v`` override that names no key or has a bad value."""
  overrides = [a for a in argv[1:] if a.startswith("--config.")]
  text = error_text(err)
  missing = _missing_key(text) if isinstance(err, (AttributeError, KeyError)) else ""
  key = missing[len("no key '"):].split("'")[0] if missing else ""
  culprit = next((a for a in overrides if key and key in a), " ".join(overrides))
  if missing:
    fail(f"unknown config key in {culprit} ({missing})")
  fail(f"bad value in {culprit}: {type(err).__name__}: {text}")


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
  except flags.Error as e:  # also a config file whose get_config raised: its last line
    fail(error_text(e))
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    bad_override(e, argv)
  except OSError as e:  # --config file missing or unreadable
    fail(f"--config: {e}")
