"""glibc malloc settings that keep XLA:CPU's large per-run buffers in the heap.

XLA:CPU allocates each run of a compiled program's temporary buffer with ``posix_memalign``
and frees it when the run ends. glibc serves a request above its mmap threshold (32 MB at
most) with a fresh ``mmap`` and frees it with ``munmap``, so each run faults its buffer in
again, page by page. PG²'s pre-training step (a 57 MB temporary buffer) takes about 15,000
page faults a step that way, and a quarter of the process's CPU time goes to the kernel.

:func:`keep_large_buffers` turns glibc's mmap path off and raises its trim threshold, so
that freed buffers stay in the heap and the next run reuses their pages. Results are
bitwise the same (the programs and their inputs do not change, only where the buffers
live); the process keeps freed heap memory until it exits (PG²'s pre-training: peak RSS
2.87 GB instead of 2.48, docs/benchmark.md). ``python -m bil_jax.main`` calls it at start-up.

It leaves malloc alone where it is not glibc's, where ``BIL_JAX_HOST_MALLOC=system``, or
where the user already set glibc's own malloc variables (``MALLOC_MMAP_MAX_``,
``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_MMAP_THRESHOLD_``, or ``glibc.malloc`` tunables).
"""
import ctypes
import os
from typing import Mapping, Optional

ENV = "BIL_JAX_HOST_MALLOC"
VALUES = ("heap", "system")  # heap: keep large buffers in the heap (default); system: leave
_GLIBC_VARIABLES = ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_")
# mallopt's parameter numbers, from glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
TRIM_THRESHOLD = 2 ** 31 - 1  # bytes (mallopt takes a C int): free heap kept at its top

_applied = False


def glibc_version() -> Optional[str]:
  """glibc's version ("2.36"), or None where the C library is not glibc."""
  try:
    text = os.confstr("CS_GNU_LIBC_VERSION")
  except (AttributeError, ValueError, OSError):
    return None
  if not text or not text.startswith("glibc "):
    return None
  return text.split()[1]


def wanted(env: Mapping[str, str]) -> bool:
  """Whether to change malloc's settings, given the environment ``env``. A one-line
  ValueError names ``BIL_JAX_HOST_MALLOC`` when it holds neither 'heap' nor 'system'."""
  value = env.get(ENV, "").strip()
  if value and value not in VALUES:
    raise ValueError(f"{ENV}={value!r} is neither 'heap' (keep XLA:CPU's large buffers in "
                     "the heap, the default) nor 'system' (leave glibc's malloc alone)")
  if value == "system":
    return False
  if any(name in env for name in _GLIBC_VARIABLES):
    return False
  return "glibc.malloc" not in env.get("GLIBC_TUNABLES", "")


def keep_large_buffers(env: Optional[Mapping[str, str]] = None) -> bool:
  """Sets glibc's M_MMAP_MAX to 0 and M_TRIM_THRESHOLD to :data:`TRIM_THRESHOLD` for this
  process (see the module docstring); returns whether it did. Safe to call more than once
  and at any time; it affects the allocations that follow."""
  global _applied
  env = os.environ if env is None else env
  if not wanted(env) or glibc_version() is None:
    return False
  libc = ctypes.CDLL(None)
  ok = libc.mallopt(M_MMAP_MAX, 0) == 1 and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
  _applied = _applied or ok
  return ok


def describe() -> str:
  """A log line where :func:`keep_large_buffers` changed malloc, '' otherwise."""
  if not _applied:
    return ""
  return (f"glibc malloc keeps large buffers in the heap ({ENV}=system to leave it alone): "
          "XLA:CPU reuses their pages instead of faulting them in every run")
