"""One XLA CPU device per core, so that evaluation runs several tasks at once on a CPU.

XLA:CPU runs one program at a time per device, and the small convolutions of one task keep
only part of the cores busy. Evaluation's tasks are independent and are spread over all
devices, one task per device at a time (:mod:`bil_jax.evaluate`), bitwise as on one
device. With one host device per core, the tuning and test phase of the synthetic config at
the protocol's sizes (``configs/synthetic.py:protocol``) take 9 s per task on 2 cores instead
of 12-13 s, and ``--mode=all`` 12:21 instead of 13:58
(docs/benchmark.md, "Evaluation on every CPU core").

``python -m bil_jax.main`` calls :func:`expose` before any JAX backend starts. It leaves
the device count alone where XLA_FLAGS already sets it, on several processes, or once a
backend is up; ``BIL_JAX_CPU_DEVICES=N`` sets the count (1: one device, as before; unset:
one per core, at most :data:`MAX_AUTO`). Training phases stay on the first device
(:func:`training_devices`): their numbers are then bitwise those of a one-device run, and
their batches (5 rows, 5 tasks) would not split over 2 devices anyway. On a machine with
an accelerator JAX's devices are the accelerator's and nothing changes.
"""
import os
from typing import List, Optional

ENV = "BIL_JAX_CPU_DEVICES"
FLAG = "--xla_force_host_platform_device_count"
MAX_AUTO = 8

_exposed = 0  # the host device count expose() set (0: none)


def count_for(env_value: Optional[str], cores: int) -> int:
  """Host devices to expose: ``BIL_JAX_CPU_DEVICES`` (a positive integer) or, unset or
  empty, one per core, at most MAX_AUTO. A one-line ValueError names the variable."""
  if env_value is None or not env_value.strip():
    return max(1, min(int(cores), MAX_AUTO))
  text = env_value.strip()
  if not text.isdigit() or int(text) < 1:
    raise ValueError(f"{ENV}={env_value!r} is not a positive integer (the XLA CPU devices "
                     "evaluation spreads its tasks over; 1: one device)")
  return int(text)


def _backends_started() -> bool:
  from jax._src import xla_bridge  # pylint: disable=import-outside-toplevel
  return xla_bridge.backends_are_initialized()


def expose(num_hosts: int) -> int:
  """Sets XLA_FLAGS to one CPU device per core (see the module docstring); returns the
  count set, 0 where it left XLA_FLAGS alone."""
  global _exposed
  flags = os.environ.get("XLA_FLAGS", "")
  if int(num_hosts) > 1 or FLAG in flags or _backends_started():
    return 0
  count = count_for(os.environ.get(ENV), len(os.sched_getaffinity(0)))
  if count <= 1:
    return 0
  os.environ["XLA_FLAGS"] = f"{flags} {FLAG}={count}".strip()
  _exposed = count
  return count


def training_devices() -> List:
  """The devices training phases use: the first device where :func:`expose` added CPU
  devices (and JAX runs on the CPU), else every device of every process."""
  import jax  # pylint: disable=import-outside-toplevel
  if _exposed > 1 and jax.default_backend() == "cpu":
    return jax.devices()[:1]
  return jax.devices()


def describe() -> str:
  """A log line for an exposed count, '' where none was set."""
  if not _exposed:
    return ""
  return (f"{_exposed} XLA CPU devices (one per core; {ENV}=1 for one): evaluation runs "
          f"{_exposed} tasks at a time, training runs on the first device")
