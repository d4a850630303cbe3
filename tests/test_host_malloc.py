"""bil_jax.host_malloc: when it changes glibc's malloc, and that large buffers then stay.

Each behaviour check runs in a fresh interpreter, so that this process's malloc is left
as it is.
"""
import subprocess
import sys
import textwrap

import pytest

from bil_jax import host_malloc

pytestmark = pytest.mark.skipif(host_malloc.glibc_version() is None,
                                reason="glibc's mallopt is what the module sets")


def test_it_applies_by_default_and_leaves_the_users_own_settings_alone():
  assert host_malloc.wanted({})
  assert host_malloc.wanted({host_malloc.ENV: "heap"})
  assert not host_malloc.wanted({host_malloc.ENV: "system"})
  assert not host_malloc.wanted({"MALLOC_MMAP_MAX_": "0"})
  assert not host_malloc.wanted({"MALLOC_TRIM_THRESHOLD_": "1"})
  assert not host_malloc.wanted({"GLIBC_TUNABLES": "glibc.malloc.mmap_max=0"})
  assert host_malloc.wanted({"GLIBC_TUNABLES": "glibc.pthread.rseq=0"})


def test_a_bad_value_is_a_one_line_error_naming_the_variable():
  with pytest.raises(ValueError, match=r"^BIL_JAX_HOST_MALLOC='mmap' is neither 'heap'"):
    host_malloc.wanted({host_malloc.ENV: "mmap"})


_FAULTS_PER_BUFFER = textwrap.dedent("""
    import ctypes, resource, sys
    from bil_jax import host_malloc
    if sys.argv[1] == "heap":
      assert host_malloc.keep_large_buffers({})
    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
    size = 48 * 2**20  # over glibc's largest mmap threshold (32 MB), as XLA:CPU's buffers

    def use_a_buffer():  # allocated, every page written, freed: as a program's temp buffer
      pointer = libc.malloc(size)
      ctypes.memset(pointer, 1, size)
      libc.free(pointer)

    use_a_buffer()  # the first buffer faults its pages in either way
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
      use_a_buffer()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    print((after - before) / 10 / (size // resource.getpagesize()))
    """)


def _faults_per_page(mode: str) -> float:
  out = subprocess.run([sys.executable, "-c", _FAULTS_PER_BUFFER, mode], check=True,
                       capture_output=True, text=True).stdout
  return float(out.split()[-1])


def test_a_freed_large_buffer_is_reused_instead_of_faulted_in_again():
  """glibc as it comes: each 48 MB buffer is a new mapping, every page a fault (1 per
  page). Kept in the heap: the pages are reused (next to no faults)."""
  assert _faults_per_page("system") > 0.9
  assert _faults_per_page("heap") < 0.05
