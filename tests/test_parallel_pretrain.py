"""Data-parallel pre-training: the same parameters on 1, 2 and 4 devices (fake CPU devices).

One subprocess with 4 fake CPU devices (XLA_FLAGS must be set before jax is imported)
builds the pre-training phase of a tiny smoke config on meshes of the first 1, 2 and 4
devices and runs 3 steps of each from the same state and batches. The two-process run of
``python -m bil_jax.main`` is in tests/test_multihost.py.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

from bil_jax import parallel

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Measured: after 3 steps (Adam, lr 1e-4) on 2 and 4 devices the parameters differ from
# one device's by at most 3.7e-9 and 5.0e-9 (float summation order); 1e-6 leaves a margin
# of 200x. 99% of the parameters moved by more than 1e-5.
ATOL = 1e-6

SCRIPT = r'''
import sys
import jax
import numpy as np
import pytest

from bil_jax import parallel
from bil_jax import builders, parallel, train
from bil_jax.data import loading
import importlib.util

spec_ = importlib.util.spec_from_file_location("c", "configs/synthetic.py")
mod = importlib.util.module_from_spec(spec_)
spec_.loader.exec_module(mod)
config = mod.get_config("smoke")
config.data.image_height = config.data.image_width = 16
config.model.ngf = config.model.ndf = 4
config.model.d_layers, config.model.num_downs = 1, 2
config.pretrain.batch_size = 4
config.data.data_dir = sys.argv[2] + "/tfds"
train_tasks, val_tasks, _ = loading.load_data(config, sys.argv[2], loading.TRAINING_SPLITS)
spec = builders.build_spec(config, train_tasks.num_classes)
out = {}
for n in (1, 2, 4):
  phase = train.pretrain_phase(config, train_tasks, val_tasks, spec, None,
                               mesh=parallel.data_mesh(jax.devices()[:n]))
  placed = phase.place(phase.initial_state)
  params, opt_state = placed["params"], placed["opt_state"]
  for step in range(3):
    params, opt_state, metrics = phase.step(params, opt_state, phase.sample(step), step)
  leaves = jax.tree.leaves(jax.device_get(params))
  out[f"params{n}"] = np.concatenate([np.ravel(x) for x in leaves])
out["before"] = np.concatenate([np.ravel(x) for x in
                                jax.tree.leaves(phase.initial_state["params"])])
out["used6"] = parallel.data_mesh_for(6, "pretrain.batch_size").devices.size
out["used4"] = parallel.data_mesh_for(4, "pretrain.batch_size").devices.size
np.savez(sys.argv[1], **out)
'''


def test_pretraining_is_independent_of_device_count(tmp_path):
  env = dict(
      os.environ,
      XLA_FLAGS=os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4",
      JAX_PLATFORMS="cpu")
  env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
  out = tmp_path / "pretrain.npz"
  proc = subprocess.run([sys.executable, "-c", SCRIPT,
                         str(out), str(tmp_path)], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  got = np.load(out)
  for n in (2, 4):
    np.testing.assert_allclose(got[f"params{n}"], got["params1"], rtol=0, atol=ATOL)
  # Not vacuous: the 3 steps moved nearly every parameter by far more than ATOL.
  assert np.mean(np.abs(got["params1"] - got["before"]) > 10 * ATOL) > 0.9
  # The default mesh: all 4 devices for 4 rows; 3 of them for 6 rows.
  assert int(got["used4"]) == 4 and int(got["used6"]) == 3


def test_devices_per_process_splits_the_rows_evenly_or_names_the_fault():
  assert parallel.devices_per_process(5, 1, 1, "k") == 1
  assert parallel.devices_per_process(5, 1, 2, "k") == 1  # the paper's batch of 5 on 2 GPUs
  assert parallel.devices_per_process(8, 1, 4, "k") == 4
  assert parallel.devices_per_process(6, 1, 4, "k") == 3
  assert parallel.devices_per_process(6, 2, 4, "k") == 3
  with pytest.raises(
      ValueError, match=r"^pretrain.batch_size=5 cannot be split over 2 "
      r"processes; use a multiple of 2$"):
    parallel.devices_per_process(5, 2, 8, "pretrain.batch_size")
