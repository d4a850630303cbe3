"""X+: pair-gradients counted per phase, the X+ phase runs meta-training's count, its lr."""
import json

import numpy as np
import pytest

import jax
from bil_jax import config_lib, loop, xplus

import tiny
from test_evaluate import tiny_setup, tiny_taskset


def test_pair_gradients_of_the_synthetic_default():
  c = config_lib.base_config()
  c.pretrain.steps, c.pretrain.batch_size = 1000, 5
  c.meta.steps, c.meta.meta_batch, c.meta.inner_steps = 150, 5, 5
  c.data.shots = c.data.queries = 5
  c.eval.aux_steps, c.eval.aux_tasks, c.eval.is_steps = 5, 5, 20
  assert xplus.pair_gradients(c) == {
      "pretrain": 5000, "meta": 22500, "xplus": 22500, "aux_per_test_task": 750,
      "is_per_test_task": 100
  }
  c.pretrain.batch_size = 7  # 22500 / 7 is not whole: X+ rounds up to a whole batch
  assert xplus.xplus_steps(c) == 3215 and xplus.pair_gradients(c)["xplus"] == 22505


def test_xplus_phase_runs_the_counted_pair_gradients(tmp_path, monkeypatch):
  c, train_ts, _, spec = tiny_setup()
  c.meta.steps, c.meta.meta_batch = 1, 2  # meta: 1 x 2 x (1 x 2 + 2) = 8 pair-gradients
  c.pretrain.batch_size = 3  # X+: ceil(8 / 3) = 3 steps of 3 = 9
  c.pretrain.log_every = c.pretrain.checkpoint_every = c.pretrain.image_every = 10
  val_ts = tiny_taskset(np.random.default_rng(1), "val", 2)
  start = tiny.init_params(spec, 0)
  rows = []
  monkeypatch.setattr(loop, "fault_hook", lambda phase, done, batch: rows.append(
      (phase, len(batch["map"]))) or batch)
  phase = xplus.xplus_phase(c, train_ts, val_ts, spec, None, start, lr=1e-2)
  assert phase.schedule.steps == 3
  trained = loop.run_phase(phase, c, str(tmp_path))
  assert rows == [("xplus", 3)] * 3
  assert sum(n for _, n in rows) == xplus.pair_gradients(c)["xplus"] == 9
  assert xplus.pair_gradients(c)["meta"] == 8
  assert (tmp_path / "xplus" / "checkpoints").is_dir()
  moved = [not np.allclose(a, b) for a, b in zip(jax.tree.leaves(trained), jax.tree.leaves(start))]
  assert any(moved)
  # Its own stream: the first batch is not pre-training's first batch.
  first = phase.sample(0)
  c.pretrain.batch_size = 3
  from bil_jax import train  # pylint: disable=g-import-not-at-top
  pre = train.pretrain_phase(c, train_ts, val_ts, spec, None, params=start).sample(0)
  assert not np.array_equal(first["image"], pre["image"])


def test_chosen_lr_prefers_the_flag_then_the_tuning_then_optim(tmp_path):
  c = config_lib.base_config()
  assert xplus.chosen_lr(c, str(tmp_path)) == (c.optim.lr, "optim.lr")
  (tmp_path / xplus.TUNING_FILE).write_text(json.dumps({"chosen_lr": 3e-4}))
  assert xplus.chosen_lr(c, str(tmp_path))[0] == 3e-4
  c.xplus.lr = 5e-5
  assert xplus.chosen_lr(c, str(tmp_path)) == (5e-5, "xplus.lr")
  (tmp_path / "xplus").mkdir()
  (tmp_path / "xplus" / xplus.LR_FILE).write_text(json.dumps({"lr": 1e-4}))
  with pytest.raises(ValueError, match="trained at lr 0.0001"):
    xplus._check_lr(str(tmp_path), 5e-5)


def test_tune_choice_names_an_end_of_the_grid():
  """The best rate (ties: the first), and which end of the grid it is on, if any."""
  grid = [6e-4, 1.2e-3, 2.4e-3, 4.8e-3]
  assert xplus.choose(grid, [0.519, 0.527, 0.533, 0.535]) == (3, "highest")
  assert xplus.choose(grid, [0.54, 0.527, 0.533, 0.535]) == (0, "lowest")
  assert xplus.choose(grid, [0.52, 0.54, 0.54, 0.53]) == (1, None)
  assert xplus.choose([4.8e-3, 6e-4], [0.5, 0.5]) == (0, "highest")
  assert xplus.choose([1e-3], [0.5]) == (0, None)


def test_xplus_reuses_the_tune_run_of_the_chosen_rate(tmp_path, monkeypatch):
  """--mode=xplus after --mode=tune: the tuning's finished run at the chosen rate is X+
  (its checkpoints copied, no step trained); another rate or step count trains afresh."""
  c, train_ts, _, spec = tiny_setup()
  c.meta.steps, c.meta.meta_batch = 1, 2  # X+: ceil(8 / 3) = 3 steps
  c.pretrain.batch_size = 3
  c.pretrain.log_every = c.pretrain.checkpoint_every = c.pretrain.image_every = 10
  c.xplus.lr_grid = (1e-3, 1e-2)
  val_ts = tiny_taskset(np.random.default_rng(1), "val", 2)
  start = tiny.init_params(spec, 0)
  workdir = str(tmp_path)
  tuned = loop.run_phase(
      xplus.xplus_phase(c, train_ts, val_ts, spec, None, start, lr=1e-2, tune_index=1), c, workdir)
  tuning = tmp_path / xplus.TUNING_FILE
  tuning.write_text(json.dumps({"lr_grid": [1e-3, 1e-2], "chosen_lr": 1e-2}))
  lr, source = xplus.chosen_lr(c, workdir)
  assert xplus.tuned_run(c, workdir, 1e-3) is None  # never trained
  assert xplus.tuned_run(c, workdir, 1e-2) == 1
  c.meta.steps = 2  # X+ would need 6 steps: the 3-step run is not it
  assert xplus.tuned_run(c, workdir, lr) is None
  c.meta.steps = 1
  assert xplus._reuse_tuned_run(c, workdir, lr, "xplus.lr") is None  # the flag's rate
  assert not (tmp_path / "xplus").exists()
  assert xplus._reuse_tuned_run(c, workdir, lr, source) == "xplus_lr1"
  assert sorted(p.name for p in (tmp_path / "xplus" / "checkpoints").iterdir()) == ["3"]
  rows = []
  monkeypatch.setattr(loop, "fault_hook", lambda phase, done, batch: rows.append(done) or batch)
  again = loop.run_phase(xplus.xplus_phase(c, train_ts, val_ts, spec, None, start, lr=lr), c,
                         workdir)
  assert rows == []
  for a, b in zip(jax.tree.leaves(again), jax.tree.leaves(tuned)):
    np.testing.assert_array_equal(a, b)
  # X+ has a checkpoint now: nothing is copied over it.
  assert xplus._reuse_tuned_run(c, workdir, lr, source) is None
