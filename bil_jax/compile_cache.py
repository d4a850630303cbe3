"""The persistent XLA compilation cache: compile once, reuse across runs.

Compiling the second-order meta-step takes one to three minutes on a small CPU, and
every run of the same config compiles the same programs. With the cache on (the
default), compiled programs are stored under ``config.compilation_cache`` and a second
identical run loads them instead of compiling. ``--config.compilation_cache=""`` turns
it off. ``JAX_COMPILATION_CACHE_DIR``, when set, takes precedence (the tests use it to
share one cache between processes).
"""
import logging
import os
import re
import threading
from typing import Optional, Tuple

import jax

DEFAULT_DIR = os.path.join("~", ".cache", "bil_jax", "xla")


def cache_dir(configured: str) -> str:
  """The directory to use: $JAX_COMPILATION_CACHE_DIR, else ``configured`` expanded ("" = off)."""
  env = os.environ.get("JAX_COMPILATION_CACHE_DIR")
  if env:
    return env
  return os.path.abspath(os.path.expanduser(configured)) if configured else ""


def enable(configured: str) -> str:
  """Turns the persistent cache on for this process; returns the directory ("" if off).

  Must run before the first compilation. Programs that compile in under 0.5 s are not
  stored (loading them would not save time).
  """
  path = cache_dir(configured)
  if not path:
    return ""
  os.makedirs(path, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs",
                    float(os.environ.get("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", 0.5)))
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  logging.info("persistent compilation cache: %s", path)
  return path


# JAX records every XLA compilation (a persistent-cache hit included) under this event.
_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
_HIT_EVENT = "/jax/compilation_cache/cache_hits"
# CompileTimer.summary's line, as parse_summary reads it back from a log.
_SUMMARY = re.compile(r"XLA compile time: ([\d.]+) s \((\d+) programs, (\d+) loaded")


class CompileTimer:
  """Adds up the XLA compile time of this process (JAX's monitoring events).

  ``seconds`` is the time spent compiling or, on a persistent-cache hit, loading the
  compiled program; ``programs`` counts both, ``cache_hits`` the loads. Tracing and
  lowering to StableHLO are not included (the cache does not save them).
  """

  def __init__(self):
    self.seconds, self.programs, self.cache_hits = 0.0, 0, 0
    self._lock = threading.Lock()
    jax.monitoring.register_event_duration_secs_listener(self._on_duration)
    jax.monitoring.register_event_listener(self._on_event)

  def _on_duration(self, event: str, duration: float, **kwargs) -> None:
    del kwargs
    if event == _COMPILE_EVENT:
      with self._lock:
        self.seconds += duration
        self.programs += 1

  def _on_event(self, event: str, **kwargs) -> None:
    del kwargs
    if event == _HIT_EVENT:
      with self._lock:
        self.cache_hits += 1

  def summary(self) -> str:
    """One line for the log: 'XLA compile time: 12.3 s (7 programs, 2 from the cache)'."""
    return (f"XLA compile time: {self.seconds:.2f} s ({self.programs} programs, "
            f"{self.cache_hits} loaded from the persistent cache)")


def parse_summary(text: str) -> Optional[Tuple[float, int, int]]:
  """(seconds, programs, programs loaded from the persistent cache) of the last
  :meth:`CompileTimer.summary` line in a log ``text``; None if it has none."""
  found = _SUMMARY.findall(text)
  if not found:
    return None
  seconds, programs, loaded = found[-1]
  return float(seconds), int(programs), int(loaded)
