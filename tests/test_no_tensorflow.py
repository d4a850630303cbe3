"""The whole job on a machine without TensorFlow: main (every phase), report, every module.

The subprocesses here start with a ``sitecustomize`` that hides TensorFlow from every
import finder, as on a machine where it is not installed: ``find_spec('tensorflow')`` is
None and ``import tensorflow`` raises ModuleNotFoundError. ``python -m bil_jax.main
--mode=all`` runs at the CLI tests' smoke size on TFDS data prepared beforehand in this
(TensorFlow) process by their shared pre-training fixture, so its programs are in the
session's compilation cache. Its TensorBoard files are read back with tensorboard's
EventAccumulator.
"""
import io
import json
import os
import shutil
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest
from tensorboard.plugins.hparams import metadata as hparams_metadata
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.util import tensor_util

from bil_jax import summary
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

# Where TensorFlow is installed, a run does not import it either: prepares and reads
# ArrayRecord data (argv[1]) and writes TensorBoard files (argv[2]) through clu's default
# writer, then says whether TensorFlow was imported and which SummaryWriter clu built.
NOT_IMPORTED = '''\
import json, sys
if len(sys.argv) > 3:
  import tensorflow  # a user's program that uses TensorFlow: clu's own writer
import bil_jax, bil_jax.main
from bil_jax.data import synthetic, tasks
from clu import metric_writers
cfg = synthetic.make_builder_config(3, 16, 16, 2, 1, 3, 5)
tasks.taskset_from_tfds(synthetic.prepare_builder(cfg, sys.argv[1]), "train", 3)
writer = metric_writers.create_default_writer(sys.argv[2], asynchronous=False)
writer.write_scalars(2, {"loss": 0.5})
writer.close()
print(json.dumps({"tensorflow_imported": "tensorflow" in sys.modules,
                  "writer": type(writer._writers[-1]).__module__}))
'''


@pytest.fixture(scope="module")
def env(tmp_path_factory):
  """The environment of a subprocess that cannot import TensorFlow."""
  site = tmp_path_factory.mktemp("no_tensorflow_site")
  (site / "sitecustomize.py").write_text(HIDE_TENSORFLOW)
  return dict(
      os.environ,
      PYTHONPATH=os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p))


def _run(env, *args):
  proc = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=900)
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
  return {
      tag: (acc.SummaryMetadata(tag).plugin_data.plugin_name, [
          (e.step, tensor_util.make_ndarray(e.tensor_proto)) for e in acc.Tensors(tag)
      ]) for tag in acc.Tags()[event_accumulator.TENSORS]
  }


def _decoded(plugin, value):
  """Images as pixel arrays [N,H,W,C] (PNG bytes decoded), anything else as it is."""
  if plugin != "images":
    return value
  return np.stack([np.asarray(Image.open(io.BytesIO(png))) for png in value[2:]])


def test_event_file_writer_writes_what_clus_tensorflow_writer_writes(tmp_path):
  from clu.metric_writers.tf import summary_writer  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  images = {
      "rgb": rng.integers(0, 256, (2, 5, 7, 3), dtype=np.uint8),
      "float": rng.random((4, 6, 3)).astype(np.float32),  # [H,W,C], floats in [0, 1]
      "gray": rng.integers(0, 256, (1, 3, 4, 1), dtype=np.uint8)
  }
  for name, writer in (("tf", summary_writer.SummaryWriter(str(tmp_path / "tf"))),
                       ("tb", summary.EventFileWriter(str(tmp_path / "tb")))):
    writer.write_hparams({"lr": 1e-3, "model": "pg2", "steps": 5, "remat": False})
    writer.write_scalars(3, {"loss": 0.25, "count": np.int32(4)})
    writer.write_images(3, images)
    writer.write_texts(7, {"table": "| a | b |\n|---|---|"})
    writer.close()
  tf_tensors, tb_tensors = _tensors(str(tmp_path / "tf")), _tensors(str(tmp_path / "tb"))
  assert set(tf_tensors) == set(tb_tensors)
  for tag, (plugin, values) in tf_tensors.items():
    assert tb_tensors[tag][0] == plugin, tag
    (step, want), = values
    (tb_step, got), = tb_tensors[tag][1]
    assert tb_step == step and got.dtype == want.dtype, tag
    np.testing.assert_array_equal(_decoded(plugin, got), _decoded(plugin, want), err_msg=tag)
  acc = [event_accumulator.EventAccumulator(str(tmp_path / d)) for d in ("tf", "tb")]
  hparams = []
  for a in acc:
    a.Reload()
    content = a.SummaryMetadata("_hparams_/session_start_info").plugin_data.content
    info = hparams_metadata.parse_session_start_info_plugin_data(content)
    hparams.append({k: v for k, v in info.hparams.items()})
  assert hparams[0] == hparams[1] and len(hparams[0]) == 4


# pylint: disable-next=redefined-outer-name
def test_main_and_report_run_without_tensorflow(pretrained, env, tmp_path):
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


@pytest.mark.parametrize("tensorflow_first", [False, True])
def test_a_run_imports_tensorflow_only_where_the_program_already_did(tensorflow_first, tmp_path):
  """Importing TensorFlow costs seconds per process: preparing and reading ArrayRecord data
  and clu's default writer do without it, unless the program imported it already."""
  proc = subprocess.run(
      [sys.executable, "-c", NOT_IMPORTED,
       str(tmp_path / "tfds"),
       str(tmp_path / "logs")] + ["tf"] * tensorflow_first, cwd=REPO, capture_output=True,
      text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  assert out["tensorflow_imported"] == tensorflow_first
  assert out["writer"] == ("clu.metric_writers.tf.summary_writer"
                           if tensorflow_first else "bil_jax.summary"), out
  (plugin, values), = _tensors(str(tmp_path / "logs")).values()
  assert plugin == "scalars" and values[0][0] == 2 and float(values[0][1]) == 0.5
