"""The validation screen's table: conditions, grid points and the ratio to the best lookup."""
import subprocess
import sys

import numpy as np

from bil_jax import screen


def test_table_splits_conditions_and_reports_the_ratio():
  names = ["val_seen_00000", "val_unseen_00000", "val_seen_00001", "val_unseen_00001"]
  lookup = {
      "lookup_label": np.array([0.2, 0.4, 0.2, 0.4]), "lookup_pixel": np.array([0.5, 0.1, 0.5, 0.1])
  }
  grid = np.zeros((4, 2, 2))  # [V, L, S]
  grid[:, 1, 0] = [0.6, 0.2, 0.6, 0.2]  # lr 1e-2, 1 step: seen 0.6, unseen 0.2, all 0.4
  text = screen.table(names, lookup, grid, [1e-3, 1e-2], [2, 1])
  assert "| predictor | seen (2) | unseen (2) | all (4) |" in text
  assert "| lookup_pixel | 0.500 | 0.100 | 0.300 |" in text
  assert "| IS lr 0.01, 1 steps | 0.600 | 0.200 | 0.400 |" in text
  assert text.endswith("best grid point / best lookup (all): 1.333")  # 0.4 / 0.3


def test_bad_grid_is_one_line_error():
  out = subprocess.run([
      sys.executable, "-m", "bil_jax.screen", "--config=configs/synthetic.py:smoke",
      "--workdir=/nonexistent", "--lrs=-1"
  ], capture_output=True, text=True, check=False)
  assert out.returncode == 1
  assert out.stderr.strip().splitlines()[-1].startswith("error: --lrs=['-1']")
