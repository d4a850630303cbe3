"""Bad inputs to ``python -m bil_jax.main`` (docs/reliability.md).

Each bad input (a corrupt or wrongly sized image, a label out of range, too few pairs,
an unknown or mistyped config key, missing weights, an unwritable workdir) ends the run
with one line naming the culprit, exit status 1 and nothing written. The runs use the
subprocess harness of tests/test_reliability.py.
"""
import os

import numpy as np
from PIL import Image

from tests import fixtures_datasets as fx
from tests.test_reliability import launch
from tests.test_reliability import shared  # pylint: disable=unused-import (fixture)

# ---------------------------------------------------------------------------
# Bad inputs: one line naming the culprit, status 1, nothing written
# ---------------------------------------------------------------------------

PAIRED = ["--config.data.name=paired_folder", "--config.data.num_classes=3"]


def _paired_folder(root, damage):
  fx.write_paired_folder(root, {"train": {"a": 4, "b": 4}, "test": {"c": 4}}, 3, (16, 16))
  if damage == "corrupt_png":
    path = os.path.join(root, "train", "a", "images", "p001.png")
    with open(path, "wb") as f:
      f.write(b"\x89PNG\r\n\x1a\n truncated")
  elif damage == "wrong_size":
    path = os.path.join(root, "train", "b", "images", "p002.png")
    Image.fromarray(np.zeros((20, 24, 3), np.uint8)).save(path)
  elif damage == "label_out_of_range":
    path = os.path.join(root, "test", "c", "labels", "p000.png")
    Image.fromarray(np.full((16, 16), 7, np.uint8)).save(path)
  elif damage == "too_few_pairs":
    path = os.path.join(root, "train", "b")
    for name in ("p001", "p002", "p003"):
      os.remove(os.path.join(path, "images", name + ".png"))
      os.remove(os.path.join(path, "labels", name + ".png"))
  return path


def test_bad_inputs_give_one_line_errors_and_no_output(shared, tmp_path):
  """Each bad input: status 1, last line 'error: ...' naming the culprit, no traceback,
  nothing in the workdir. The runs go in parallel."""
  cases = {}
  for damage in ("corrupt_png", "wrong_size", "label_out_of_range", "too_few_pairs"):
    root = str(tmp_path / damage / "data")
    culprit = _paired_folder(root, damage)
    cases[damage] = (culprit, [
        *PAIRED, f"--config.data.manual_dir={root}",
        f"--config.data.data_dir={tmp_path / damage / 'tfds'}"
    ])
  cases["unknown_key"] = ("--config.data.no_such_key=1", ["--config.data.no_such_key=1"])
  cases["wrong_type"] = ("--config.pretrain.steps=ten", ["--config.pretrain.steps=ten"])
  cases["missing_weights"] = ("/nonexistent/vgg16.msgpack", [
      "--config.loss.lambda_b=2", "--config.loss.vgg_weights=/nonexistent/vgg16.msgpack"
  ])
  blocker = tmp_path / "a_file"
  blocker.write_text("not a directory")
  cases["unwritable_workdir"] = (str(blocker), [])
  procs = {}
  for name, (_, extra) in cases.items():
    workdir = (str(blocker / "work") if name == "unwritable_workdir" else str(tmp_path / name
                                                                              / "work"))
    procs[name] = (workdir,
                   launch(shared, workdir, "pretrain", *extra, log=str(tmp_path / f"{name}.log")))
  for name, (workdir, proc) in procs.items():
    rc = proc.wait(300)
    with open(proc.log) as f:
      out = f.read()
    last = out.strip().splitlines()[-1]
    assert rc == 1, f"{name}: status {rc}\n{out[-3000:]}"
    assert last.startswith("error: ") and cases[name][0] in last, f"{name}: {last}"
    assert "Traceback" not in out, f"{name}:\n{out[-3000:]}"
    assert not os.path.exists(workdir) or not os.listdir(workdir), (
        f"{name}: left {os.listdir(workdir)}")
