"""The whole job on a machine without TensorFlow: main (every phase), report, every module.

The subprocesses here start with a ``sitecustomize`` that hides TensorFlow from every
import finder, as on a machine where it is not installed: ``find_spec('tensorflow')`` is
None and ``import tensorflow`` raises ModuleNotFoundError. ``python -m bil_jax.main
--mode=all`` runs at the CLI tests' smoke size on TFDS data prepared beforehand in this
(TensorFlow) process by their shared pre-training fixture, so its programs are in the
session's compilation cache. Its TensorBoard files are read back with tensorboard's
EventAccumulator.
"""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.util import tensor_util

from bil_jax.data import synthetic
from tests.test_estimators_cli import REPO, SMALL
from tests.test_estimators_cli import pretrained  # pylint: disable=unused-import (fixture)

HIDE_TENSORFLOW = '''\
import sys


class _HideTensorFlow:
  """Answers 'not found' for tensorflow and its submodules, else asks the wrapped finder."""

  def __init__(self, inner):
    self._inner = inner

  def find_spec(self, name, path=None, target=None):
    if name == "tensorflow" or name.startswith("tensorflow."):
      return None
    return self._inner.find_spec(name, path, target)

  def __getattr__(self, attr):
    return getattr(self._inner, attr)


sys.meta_path[:] = [_HideTensorFlow(f) if hasattr(f, "find_spec") else f
                    for f in sys.meta_path]
'''

# Imports every bil_jax module, then reads a TFRecord-prepared dataset (argv[1]).
IMPORT_ALL = '''\
import importlib, importlib.util, json, pkgutil, sys
assert importlib.util.find_spec("tensorflow") is None
import bil_jax
failed = []
for m in pkgutil.walk_packages(bil_jax.__path__, "bil_jax."):
  try:
    importlib.import_module(m.name)
  except Exception as e:  # pylint: disable=broad-except
    failed.append(f"{m.name}: {e!r}")
from bil_jax.data import synthetic, tasks
cfg = synthetic.make_builder_config(3, 16, 16, 2, 1, 3, 5)
try:
  tasks.taskset_from_tfds(synthetic.prepare_builder(cfg, sys.argv[1], "tfrecord"), "train", 3)
  error = ""
except ValueError as e:
  error = str(e)
print(json.dumps({"failed": failed, "tfrecord_error": error,
                  "tensorflow_imported": "tensorflow" in sys.modules}))
'''


@pytest.fixture(scope="module")
def env(tmp_path_factory):
  """The environment of a subprocess that cannot import TensorFlow."""
  site = tmp_path_factory.mktemp("no_tensorflow_site")
  (site / "sitecustomize.py").write_text(HIDE_TENSORFLOW)
  return dict(os.environ, PYTHONPATH=os.pathsep.join(
      p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p))


def _run(env, *args):
  proc = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc


def test_every_module_imports_and_tfrecord_data_asks_for_tensorflow(env, tmp_path):
  data_dir = str(tmp_path / "tfds")
  synthetic.prepare_builder(synthetic.make_builder_config(3, 16, 16, 2, 1, 3, 5), data_dir,
                            "tfrecord")  # here, with TensorFlow
  out = json.loads(_run(env, "-c", IMPORT_ALL, data_dir).stdout.strip().splitlines()[-1])
  assert out["failed"] == [] and not out["tensorflow_imported"], out
  error = out["tfrecord_error"]
  assert error.startswith(data_dir) and "synthetic_scenes" in error and "tfrecord" in error
  assert "install tensorflow-cpu here, or prepare it elsewhere" in error
  assert "\n" not in error


def _tensors(logdir):
  """{tag: (plugin name, [(step, value ndarray)])} of the event files in ``logdir``."""
  acc = event_accumulator.EventAccumulator(logdir, size_guidance={event_accumulator.TENSORS: 0})
  acc.Reload()
  return {tag: (acc.SummaryMetadata(tag).plugin_data.plugin_name,
                [(e.step, tensor_util.make_ndarray(e.tensor_proto)) for e in acc.Tensors(tag)])
          for tag in acc.Tags()[event_accumulator.TENSORS]}


def test_main_and_report_run_without_tensorflow(pretrained, env, tmp_path):  # pylint: disable=redefined-outer-name
  workdir = tmp_path / "w"
  shutil.copytree(pretrained / "tfds", workdir / "tfds")  # prepared with TensorFlow
  _run(env, "-m", "bil_jax.main", "--config=configs/synthetic.py", f"--workdir={workdir}",
       "--mode=all", *SMALL)

  with open(workdir / "eval" / "results.json") as f:
    results = json.load(f)
  rows = results["rows"]
  assert rows and all(0.0 <= r["ssim"] <= 1.0 for r in rows.values())
  for phase, scalar in (("pretrain", "heldout_l1"), ("meta", "heldout_l1_after")):
    tensors = _tensors(str(workdir / phase))
    plugin, values = tensors[scalar]
    assert plugin == "scalars" and values[0][0] == 0 and len(values) >= 2
    assert all(v.dtype == np.float32 and v.shape == () and np.isfinite(v) for _, v in values)
    plugin, values = tensors[f"{phase}_samples"]
    width, height, png = values[0][1]  # one grid: [width, height, PNG bytes]
    assert plugin == "images" and int(width) > 0 and int(height) > 0
    assert png.startswith(b"\x89PNG")
  tensors = _tensors(str(workdir / "eval"))
  assert tensors["_hparams_/session_start_info"][0] == "hparams"
  plugin, values = tensors["results"]
  assert plugin == "text" and b"| Model |" in values[0][1].item()
  plugin, values = tensors["bil/ssim"]
  assert plugin == "scalars" and values[0][1] == pytest.approx(
      rows[results["row_ids"]["bil"]]["ssim"], rel=1e-6)

  _run(env, "-m", "bil_jax.report", str(workdir), "--out", str(tmp_path / "report"))
  assert "| Model |" in (tmp_path / "report.md").read_text()
