"""Data parallelism over tasks: same result on 1, 2, 4 devices and across 2 processes."""
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "parallel_worker.py")


def _env(devices):
  env = dict(os.environ)
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  env.pop("JAX_COORDINATOR_ADDRESS", None)
  return env


def _run(out, devices, extra=()):
  return subprocess.Popen([sys.executable, WORKER, str(out), *map(str, extra)],
                          env=_env(devices), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _wait(proc):
  out, _ = proc.communicate(timeout=600)
  assert proc.returncode == 0, out.decode()[-3000:]


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.fixture(scope="module")
def single(tmp_path_factory):
  path = tmp_path_factory.mktemp("p") / "one.npz"
  _wait(_run(path, 1))
  return np.load(path)


def test_meta_step_is_independent_of_device_count(single, tmp_path):
  """One meta-step over 4 tasks on 2 and 4 fake CPU devices equals the 1-device result."""
  procs = {n: _run(tmp_path / f"{n}.npz", n) for n in (2, 4)}
  for n, proc in procs.items():
    _wait(proc)
    got = np.load(tmp_path / f"{n}.npz")
    assert int(got["devices"]) == n
    np.testing.assert_allclose(got["params"], single["params"], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(got["loss"], single["loss"], rtol=1e-5)
  # The step really changed the parameters (the comparison is not vacuous): nearly every
  # entry moved by far more than the tolerance above (measured: 99% by more than 1e-5).
  moved = np.abs(single["params"] - single["before"])
  assert np.mean(moved > 1e-5) > 0.9, np.mean(moved > 1e-5)


def test_two_processes_agree_with_one(single, tmp_path):
  """Two processes (gloo collectives, coordinator on 127.0.0.1) each feed 2 of the 4 tasks."""
  port = _free_port()
  out = tmp_path / "mp.npz"
  procs = [_run(out, 1, (pid, 2, port)) for pid in (0, 1)]
  for proc in procs:
    _wait(proc)
  got = np.load(out)
  assert int(got["processes"]) == 2 and int(got["devices"]) == 2
  np.testing.assert_allclose(got["params"], single["params"], rtol=1e-5, atol=1e-7)


def test_meta_batch_must_divide_over_devices():
  import jax  # pylint: disable=g-import-not-at-top
  from bil_jax import parallel  # pylint: disable=g-import-not-at-top
  mesh = parallel.make_mesh(jax.devices()[:1] * 1)
  parallel.check_meta_batch(3, mesh)

  class FakeMesh:
    class devices:  # pylint: disable=invalid-name
      size = 2
  with pytest.raises(ValueError, match="meta.meta_batch=3 is not divisible by the 2 devices"):
    parallel.check_meta_batch(3, FakeMesh)
