"""Parallel evaluation: the table does not depend on the device count."""
import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image

from bil_jax import rows

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "parallel_eval_worker.py")
NUM_TEST = 3  # 4 devices: the last task is repeated once to fill the last device


def _run(workdir, devices):
  env = dict(os.environ)
  env["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}"
  env.pop("JAX_COORDINATOR_ADDRESS", None)
  return subprocess.Popen(
      [sys.executable, WORKER, str(workdir), str(NUM_TEST)], env=env, stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT)


def _wait(proc):
  out, _ = proc.communicate(timeout=600)
  assert proc.returncode == 0, out.decode()[-3000:]


def test_evaluation_on_1_and_4_devices_gives_the_same_table(tmp_path):
  """Three test tasks on 1 device (three rounds) and on 4 fake CPU devices (one round, the
  last task padded): the same per-task metrics, retrieved tasks and sample grid. Measured:
  bitwise equal (each device runs the one-device program on its own task); the tolerance
  only allows for a summation order that a future XLA might change."""
  procs = {n: _run(tmp_path / str(n), n) for n in (1, 4)}
  for proc in procs.values():
    _wait(proc)
  one, four = ({
      "devices": int((tmp_path / str(n) / "devices").read_text()), "results": json.loads(
          (tmp_path / str(n) / "eval" / "results.json").read_text()),
      "png": np.asarray(Image.open(tmp_path / str(n) / "eval" / "samples.png"), np.int16)
  } for n in (1, 4))
  assert one["devices"] == 1 and four["devices"] == 4
  a, b = one["results"], four["results"]
  assert a["task_names"] == b["task_names"] == ["test0", "test1", "test2"]
  assert a["aux_retrieval"] == b["aux_retrieval"]
  assert set(a["per_task"]) == set(b["per_task"]) and len(a["per_task"]) == len(rows.ROW_IDS)
  # Tuning on the 2 validation tasks (padded to 4 devices) chooses the same settings.
  assert a["tuning"]["chosen"] == b["tuning"]["chosen"]
  for row, scores in a["tuning"]["val_ssim"].items():
    np.testing.assert_allclose(b["tuning"]["val_ssim"][row], scores, rtol=1e-5, atol=1e-6)
  for name, values in a["per_task"].items():
    for metric, v in values.items():
      assert len(v) == NUM_TEST
      np.testing.assert_allclose(b["per_task"][name][metric], v, rtol=1e-5, atol=1e-6,
                                 err_msg=f"{name} {metric}")
  for name, row in a["rows"].items():
    for metric, v in row.items():
      assert (v is None) == (b["rows"][name][metric] is None)
      if v is not None:
        np.testing.assert_allclose(b["rows"][name][metric], v, rtol=1e-5, atol=1e-6)
  assert one["png"].shape == four["png"].shape
  assert np.abs(one["png"] - four["png"]).max() <= 1
