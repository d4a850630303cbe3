"""Test phase: ablation rows, table formatting, retrieval use, and the whole pipeline."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from bil_jax import evaluate
from bil_jax.data import tasks

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_row_names_follow_the_paper():
  names = evaluate.row_names("pix2pix", 5)
  assert list(names.values()) == ["Pix2pix", "Pix2pix (5-shot)", "BiL-Pix2pix w/o Aux (5-shot)",
                                  "BiL-Pix2pix (5-shot)", "BiL-Pix2pix (GP)"]
  assert evaluate.row_names("pg2", 1)["bil"] == "BiL-PG2 (1-shot)"


def test_rows_average_and_lpips_is_never_made_up():
  rows = evaluate._mean_rows({"A": [{"ssim": 0.5, "mse": 0.1, "psnr": 20.0},
                                    {"ssim": 0.7, "mse": 0.3, "psnr": 10.0}]})
  assert rows["A"] == {"lpips": None, "ssim": pytest.approx(0.6), "mse": pytest.approx(0.2),
                       "psnr": pytest.approx(15.0)}
  table = evaluate.markdown_table(rows)
  assert "| A | n/a | 0.600 | 0.200 | 15.000 |" in table
  with_lpips = evaluate._mean_rows({"B": [{"lpips": 0.25, "ssim": 1.0, "mse": 0.0, "psnr": 30.0}]})
  assert "| B | 0.250 |" in evaluate.markdown_table(with_lpips)


def test_retrieval_finds_the_task_with_the_same_layouts():
  rng = np.random.default_rng(0)
  maps = [rng.integers(0, 4, (3, 8, 8)).astype(np.uint8) for _ in range(6)]
  ts = tasks.from_tasks([(f"t{i}", m, np.zeros(m.shape + (3,), np.uint8))
                         for i, m in enumerate(maps)], 4)
  top = evaluate.retrieve_aux_tasks(maps[4][:2].astype(np.int32), ts, 3)
  assert top[0] == 4 and len(set(top.tolist())) == 3


def test_pipeline_runs_end_to_end_and_writes_all_outputs(tmp_path):
  """--mode=all (pretrain, metatrain, evaluate) on a tiny config writes JSON, Markdown and PNG."""
  proc = subprocess.run(
      [sys.executable, "-m", "bil_jax.main",
       f"--config={ROOT}/configs/faceforensics_pg2.py:smoke", f"--workdir={tmp_path}",
       # Second-order meta-gradients are tested in test_estimators/test_parallel/
       # test_reliability; compiling PG2's would take most of this test's time.
       "--config.meta.estimator=first_order"],
      cwd=ROOT, capture_output=True, text=True, timeout=1800)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = tmp_path / "eval"
  result = json.loads((out / "results.json").read_text())
  assert len(result["rows"]) == 5
  for row in result["rows"].values():
    assert row["lpips"] is None
    assert 0.0 <= row["mse"] <= 4.0 and -1.0 <= row["ssim"] <= 1.0 and np.isfinite(row["psnr"])
  assert result["config"]["data"]["name"] == "synthetic"
  assert all(len(r["aux_tasks"]) == result["config"]["eval"]["aux_tasks"]
             for r in result["aux_retrieval"])
  table = (out / "results.md").read_text()
  assert table.count("\n") == 7 and "n/a" in table
  assert (out / "samples.png").stat().st_size > 0
