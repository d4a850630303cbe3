"""Tests of the guards that keep a run's state sound (docs/reliability.md).

An unreadable latest checkpoint falls back to the previous one; a non-finite state is
never checkpointed; a workdir made by another config is refused; the non-finite guard
of the optimizers skips a NaN update inside jit.
"""
import glob
import os
import shutil

import numpy as np
import pytest

from bil_jax import checkpoint
from bil_jax import config_lib
from bil_jax import errors
from bil_jax import workdirs


def _state(v):
  return {"step": np.asarray(v, np.int64), "params": {"w": np.full((8, 8), v, np.float32)}}


@pytest.mark.parametrize("damage", ["truncate_data", "empty_metadata", "delete_item"])
def test_unreadable_latest_checkpoint_falls_back_to_previous(tmp_path, damage):
  """A truncated / emptied / half-deleted latest checkpoint: warning, restore of the
  previous step; the bad step is set aside and can be saved again."""
  d = str(tmp_path / "ckpt")
  c = checkpoint.Checkpointer(d)
  c.save(2, _state(2))
  c.save(4, _state(4))
  c.close()
  files = [f for f in glob.glob(f"{d}/4/**", recursive=True) if os.path.isfile(f)]
  if damage == "truncate_data":
    for f in files:
      if os.sep + "d" + os.sep in f:
        with open(f, "r+b") as fh:
          fh.truncate(os.path.getsize(f) // 2)
  elif damage == "empty_metadata":
    for f in files:
      if f.endswith("_METADATA"):
        open(f, "w").close()
  else:
    shutil.rmtree(f"{d}/4/default")
  c = checkpoint.Checkpointer(d)
  state, step = c.restore(_state(0))
  assert step == 2 and float(state["params"]["w"][0, 0]) == 2.0
  assert os.path.isdir(f"{d}.unreadable/4") and c.all_steps() == [2]
  c.save(4, _state(4))
  assert c.restore(_state(0))[1] == 4
  c.close()


def test_nonfinite_state_is_never_checkpointed(tmp_path):
  c = checkpoint.Checkpointer(str(tmp_path / "ckpt"))
  bad = _state(1)
  bad["params"]["w"][3, 3] = np.inf
  with pytest.raises(checkpoint.NonFiniteStateError, match=r"step 1 .*\['params'\]\['w'\]"):
    c.save(1, bad)
  assert c.all_steps() == []
  c.close()


def test_workdir_made_by_another_config_is_refused_unless_overwrite(tmp_path):
  """Same config (or only run-length/logging keys changed): resumes. Different: refused
  with the differing keys named; overwrite=True deletes the runs and starts afresh."""
  config = config_lib.base_config()
  workdir = str(tmp_path / "w")
  workdirs.record_config(config, workdir)
  os.makedirs(os.path.join(workdir, "pretrain", "checkpoints"))
  for folder in ("xplus", "xplus_lr0"):  # X+ and a --mode=tune run
    os.makedirs(os.path.join(workdir, folder, "checkpoints"))
  with open(os.path.join(workdir, "xplus_tuning.json"), "w") as f:
    f.write("{}")
  workdirs.check_workdir(config, workdir)
  config.pretrain.steps += 10
  config.meta.log_every = 7
  workdirs.check_workdir(config, workdir)
  config.model.ngf = 8
  with pytest.raises(errors.WorkdirError, match=r"model\.ngf: 16 -> 8.*overwrite=True"):
    workdirs.check_workdir(config, workdir)
  assert os.path.isdir(os.path.join(workdir, "pretrain"))
  config.overwrite = True
  workdirs.check_workdir(config, workdir)
  for name in ("pretrain", "xplus", "xplus_lr0", "xplus_tuning.json", "config.json"):
    assert not os.path.exists(os.path.join(workdir, name)), name


def test_nonfinite_guard_keeps_old_state_inside_jit():
  """skip_nonfinite(opt): a NaN gradient or a NaN loss gives a zero update, keeps the
  inner state and counts the skip in the optimizer state; finite steps equal opt's."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from bil_jax import nonfinite  # pylint: disable=g-import-not-at-top

  opt = nonfinite.skip_nonfinite(optax.adam(0.1))

  def stepper(o):

    @jax.jit
    def step(p, s, g, loss):
      u, s = o.update(g, s, p, losses={"loss": loss})
      return optax.apply_updates(p, u), s

    return step

  step = stepper(opt)
  p = jnp.ones(3)
  s = opt.init(p)
  p, s = step(p, s, jnp.ones(3), 1.0)
  plain = optax.adam(0.1)
  want, _ = stepper(plain)(jnp.ones(3), plain.init(jnp.ones(3)), jnp.ones(3), 1.0)
  np.testing.assert_allclose(p, want, rtol=1e-6)
  assert nonfinite.skip_count(s) == 0
  before = (p, s.inner_state)
  p, s = step(p, s, jnp.array([1.0, jnp.nan, 1.0]), 1.0)
  assert nonfinite.skip_count(s) == 1
  p, s = step(p, s, jnp.ones(3), jnp.inf)
  assert nonfinite.skip_count(s) == 2
  np.testing.assert_array_equal(p, before[0])
  jax.tree.map(np.testing.assert_array_equal, s.inner_state, before[1])
