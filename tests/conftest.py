"""Shared test set-up: one persistent XLA compilation cache for the whole test run, XLA:CPU
with quick-to-compile flags, the slow tests first, and CPU seconds per test on request.

Compiling on a 2-core CPU dominates the suite's time, and many tests (and the
subprocesses they start) compile the same programs. The cache directory is exported
through ``JAX_COMPILATION_CACHE_DIR`` so subprocesses and pytest-xdist workers share it;
it is created fresh per run unless ``BIL_JAX_TEST_CACHE`` names one to reuse.
"""
import os
import resource
import tempfile
import time

import pytest

_CACHE = os.environ.get("BIL_JAX_TEST_CACHE") or os.environ.get("JAX_COMPILATION_CACHE_DIR")
if not _CACHE:
  _CACHE = os.path.join(tempfile.gettempdir(), f"bil_jax_test_cache_{os.getppid()}")
os.makedirs(_CACHE, exist_ok=True)
os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE
# Every program, however small, goes to the cache: each `python -m bil_jax.main` the tests
# start compiles a few dozen small ones (10-100 ms each) that later processes can load.
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
# XLA:CPU's compile flags for every test and subprocess: compiling dominates the suite.
# * LLVM's optimisation level 0: about half the compile time of the default level, and the
#   tests' small programs barely run slower.
# * The legacy loop emitters for fusions instead of the MLIR fusion emitters: at level 0
#   the tests' programs compile in about half the time (test_evaluate's PG² --mode=all on
#   the idle 2-core machine: XLA compile 88 s -> 42 s, CPU 182 s -> 99 s user, wall 133 s
#   -> 87 s, running included).
# Graph-level (HLO) optimisation is unchanged; float results may differ from the default
# flags' in the last bits, so tests compare runs made under the same flags. Tests that set
# XLA_FLAGS for a subprocess append to these.
_COMPILE_FLAGS = ("--xla_backend_optimization_level=0", "--xla_cpu_use_fusion_emitters=false")
# One XLA CPU device for the `python -m bil_jax.main` runs the tests start (main exposes
# one per core otherwise, bil_jax.cpu_devices), so that they share compiled programs with
# the in-process tests; test_multihost checks the per-core devices.
os.environ.setdefault("BIL_JAX_CPU_DEVICES", "1")
for _flag in _COMPILE_FLAGS:
  if _flag.split("=")[0] not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_flag}".strip()

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position

jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs",
                  float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

# ---------------------------------------------------------------------------
# Scheduling under pytest-xdist (`-n 2`): the slow tests first, handed out one at a time
# ---------------------------------------------------------------------------

# Tests that take minutes on 2 CPU cores (nodeid prefixes). They run before the ~270
# quick ones, so that no long test starts near the end while the other worker idles.
# The first two go to one worker, the next two to the other (xdist hands each worker two
# tests at the start, then one whenever it finishes one). Runs that compile the same
# programs are kept apart, so that the second finds them in the compilation cache instead
# of compiling them at the same time: the CLI runs early, test_reliability's runs (the
# same TINY pre-training program) later.
SLOW_FIRST = (
    "tests/test_evaluate.py::test_pipeline_runs_end_to_end_and_writes_all_outputs",
    "tests/test_multihost.py::test_two_processes_match_one",  # makes the module's runs
    "tests/test_bench.py::test_torch_reference_computes_the_same_meta_gradients_as_jax",
    "tests/test_estimators_cli.py::test_first_order_trains_and_evaluates_through_main",
    "tests/test_estimators_cli.py::test_estimator_meta_trains_through_main[second_order",
    "tests/test_estimators_cli.py::",
    "tests/test_reliability.py::test_sigkill_at_random_steps_then_resume_is_bitwise_identical",
    "tests/test_bench.py::test_cost_and_fidelity_on_a_tiny_model",
    "tests/test_reliability.py::test_meta_sgd_rates_survive_sigkill_resume_and_reach_evaluation",
    "tests/test_estimator_variants.py::test_es_agrees_with_second_order_with_many_pairs",
)

# Tests that run last. The multi-host ones read the runs test_two_processes_match_one's
# fixture makes under a file lock (once per session, shared by the workers): a worker that
# reached them early would wait on the lock, idle, while the other worker makes them. The
# device check's --mode=all run compiles the pre-training, X+ and evaluation programs of
# that fixture's one-process runs, and finds them in the compilation cache once those ran.
LAST = (
    "tests/test_bench.py::test_device_check_at_smoke_size_records_each_part_and_survives",
    "tests/test_multihost.py::test_second_identical_run_does_not_recompile",
    "tests/test_multihost.py::test_two_processes_set_a_damaged_checkpoint_aside",
    "tests/test_multihost.py::test_one_cpu_device_per_core_changes_no_number",
)


def pytest_configure(config):
  # xdist's `load` scheduling otherwise sends each worker a quarter of the tests in
  # contiguous chunks up front: the slow tests above would all land on the first worker.
  if getattr(config.option, "maxschedchunk", "") is None:
    config.option.maxschedchunk = 1


def pytest_collection_modifyitems(config, items):
  del config

  def rank(item):
    if item.nodeid.startswith(LAST):
      return len(SLOW_FIRST) + 1
    return next((i for i, p in enumerate(SLOW_FIRST) if item.nodeid.startswith(p)), len(SLOW_FIRST))

  items.sort(key=rank)  # stable: file order otherwise


# ---------------------------------------------------------------------------
# CPU seconds per test (`BIL_JAX_TEST_CPU_LOG=FILE`): what a test costs on 2 cores
# ---------------------------------------------------------------------------


def _cpu_seconds():
  """User + system CPU seconds of this process and of its waited-for subprocesses."""
  own, kids = (resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
  return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
  """Appends '<cpu s> <wall s> <nodeid>' per test (set-up, call and tear-down together)
  to the file ``BIL_JAX_TEST_CPU_LOG`` names: wall time on a shared 2-core machine says
  little, CPU time says what a test costs the suite."""
  del nextitem
  path = os.environ.get("BIL_JAX_TEST_CPU_LOG")
  cpu, wall = _cpu_seconds(), time.monotonic()
  yield
  if path:
    with open(path, "a") as f:
      f.write(f"{_cpu_seconds() - cpu:.1f} {time.monotonic() - wall:.1f} {item.nodeid}\n")
