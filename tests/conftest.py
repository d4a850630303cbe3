"""Shared test set-up: one persistent XLA compilation cache for the whole test run.

Compiling on a 2-core CPU dominates the suite's time, and many tests (and the
subprocesses they start) compile the same programs. The cache directory is exported
through ``JAX_COMPILATION_CACHE_DIR`` so subprocesses and pytest-xdist workers share it;
it is created fresh per run unless ``BIL_JAX_TEST_CACHE`` names one to reuse.
"""
import os
import tempfile

_CACHE = os.environ.get("BIL_JAX_TEST_CACHE") or os.environ.get("JAX_COMPILATION_CACHE_DIR")
if not _CACHE:
  _CACHE = os.path.join(tempfile.gettempdir(), f"bil_jax_test_cache_{os.getppid()}")
os.makedirs(_CACHE, exist_ok=True)
os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position

jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
