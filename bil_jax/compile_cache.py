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
