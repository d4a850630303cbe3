"""Data parallelism over the meta-batch: the same result on 1, 2, 4 devices, across 2
processes, and on a 2-D ('tasks' x 'batch') mesh that splits each task's pairs (5 x 2)."""
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "parallel_worker.py")


def _env(devices):
  env = dict(os.environ)
  # XLA:CPU aborts a process whose fake devices wait more than 40 s for each other in a
  # collective (seen at a load of 30 on the 2-core test machine): allow 10 minutes.
  env["XLA_FLAGS"] = (
      f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices} "
      "--xla_cpu_collective_call_terminate_timeout_seconds=600")
  env.pop("JAX_COORDINATOR_ADDRESS", None)
  return env


def _run(out, devices, extra=()):
  return subprocess.Popen(
      [sys.executable, WORKER, str(out), *map(str, extra)], env=_env(devices),
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


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


def test_mesh_shape_is_the_largest_task_split_whose_rest_splits_the_pairs():
  """choose_mesh_shape (a pure function): T = the largest divisor of M and N whose
  B = N / T divides the shots and the queries; usable counts are T * B over all fits."""
  from bil_jax import parallel  # pylint: disable=g-import-not-at-top
  choose = parallel.choose_mesh_shape
  # The paper's meta-batch of 5 with 4 shots and 4 queries.
  assert [choose(n, 5, 4, 4) for n in (1, 2, 4, 5, 10, 20)] == [(1, 1), (1, 2), (1, 4), (5, 1),
                                                                (5, 2), (5, 4)]
  assert parallel.usable_device_counts(5, 4, 4) == [1, 2, 4, 5, 10, 20]
  # Tasks first: where the tasks alone fill the devices, the pairs are not split.
  assert choose(4, 4, 2, 2) == (4, 1) and choose(2, 4, 2, 2) == (2, 1)
  assert choose(8, 4, 2, 2) == (4, 2) and choose(6, 6, 5, 5) == (6, 1)
  assert choose(4, 2, 4, 2) == (2, 2)  # B must divide the queries too
  assert choose(4, 1, 4, 0) == (1, 4)  # no queries: any B
  with pytest.raises(ValueError) as e:
    choose(3, 5, 4, 4)
  assert str(e.value) == ("meta.meta_batch=5 with data.shots=4, data.queries=4 cannot be "
                          "split over 3 devices; use 1, 2, 4, 5, 10 or 20 devices")
  assert "\n" not in str(e.value)
  # meta.mesh_shape overrides the choice, and is checked.
  assert parallel.mesh_shape(10, 5, 4, 4, "") == (5, 2)
  assert parallel.mesh_shape(4, 4, 4, 4, "2x2") == (2, 2)
  for bad, msg in (("3x2", "has 6 devices, not the 4"), ("4x1", "does not split "
                                                         "meta.meta_batch=5 over 4"), ("2-2",
                                                                                       "is not")):
    with pytest.raises(ValueError, match=f"meta.mesh_shape={bad!r} {msg}"):
      parallel.mesh_shape(4, 5, 4, 4, bad)


def test_meta_batch_of_5_on_3_devices_is_a_one_line_error():
  """The meta-training mesh for 3 devices (the path of train.meta_mesh) names the counts."""
  import jax  # pylint: disable=g-import-not-at-top
  from bil_jax import parallel  # pylint: disable=g-import-not-at-top
  with pytest.raises(
      ValueError, match=r"^meta.meta_batch=5 with data.shots=4, data.queries=4 "
      r"cannot be split over 3 devices; use 1, 2, 4, 5, 10 or 20 devices$"):
    parallel.make_meta_mesh(5, 4, 4, devices=jax.devices()[:1] * 3)
  mesh = parallel.make_meta_mesh(5, 4, 4, devices=jax.devices()[:1])
  assert mesh.axis_names == ("tasks", "batch") and mesh.devices.shape == (1, 1)
  assert parallel.batch_axis_name(mesh) is None


MESH_ESTIMATORS = "second_order,first_order"


@pytest.fixture(scope="module")
def mesh_runs(tmp_path_factory):
  """One meta-step of the worker's mesh case (5 tasks of 4 shots and 4 queries, batch
  norm and dropout) on 1 device and on 10 fake devices (5 x 2), run at the same time."""
  path = tmp_path_factory.mktemp("mesh")
  procs = {n: _run(path / f"{n}.npz", n, ("mesh", MESH_ESTIMATORS)) for n in (1, 10)}
  for proc in procs.values():
    _wait(proc)
  return {n: np.load(path / f"{n}.npz") for n in procs}


def test_meta_batch_of_5_on_a_5x2_mesh_equals_one_device(mesh_runs):
  """5 tasks of 4 shots and 4 queries on 10 fake devices (5 x 2: each device holds 2 shots
  and 2 queries of one task; inner gradients, batch-norm moments and losses averaged over
  'batch', dropout masks drawn for the whole task batch) give the parameters of one device
  after one meta-step, for second_order (second-order gradients through the pmeans) and
  first_order. Measured: max |difference| 4.5e-8 (second_order), 6e-8 (first_order), of
  parameters moved by up to 1.6e-2; without the batch-norm pmean it is 1.2e-2, with
  per-device dropout masks 6.3e-3."""
  one, ten = mesh_runs[1], mesh_runs[10]
  assert tuple(one["mesh"]) == (1, 1) and tuple(ten["mesh"]) == (5, 2)
  for name in MESH_ESTIMATORS.split(","):
    np.testing.assert_allclose(ten[f"params_{name}"], one[f"params_{name}"], rtol=1e-5, atol=1e-7,
                               err_msg=name)
    np.testing.assert_allclose(ten[f"loss_{name}"], one[f"loss_{name}"], rtol=1e-5)
    moved = np.abs(one[f"params_{name}"] - one[f"before_{name}"])
    assert np.mean(moved > 1e-5) > 0.9, (name, np.mean(moved > 1e-5))


def test_two_processes_split_the_pairs_of_every_task(mesh_runs, tmp_path):
  """Two processes of one device each: a 1 x 2 mesh, so both feed all 5 tasks and each
  device gets its block of 2 of the 4 shots and queries of every task (the host-side
  placement across processes); the step equals one device's (measured: 6e-8)."""
  port = _free_port()
  out = tmp_path / "mp.npz"
  procs = [_run(out, 1, ("mesh", "second_order", pid, 2, port)) for pid in (0, 1)]
  for proc in procs:
    _wait(proc)
  got = np.load(out)
  assert int(got["processes"]) == 2 and tuple(got["mesh"]) == (1, 2)
  np.testing.assert_allclose(got["params_second_order"], mesh_runs[1]["params_second_order"],
                             rtol=1e-5, atol=1e-7)
