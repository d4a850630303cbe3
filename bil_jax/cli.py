"""One-line errors of the command-line tools (``bil_jax.main``, ``bil_jax.bench``).

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
