"""Every shipped estimator, a masked variant and a user's own estimator through the CLI.

Each runs ``python -m bil_jax.main`` as a user would, at smoke size, and must meta-train
with that estimator: the meta-training checkpoint reaches the last step with finite
parameters that moved away from the pre-trained ones. Meta-SGD's run is in
tests/test_reliability.py, which meta-trains it through ``main``, kills and resumes it, and
checks its learned rates. Pre-training does not depend on the meta-gradient estimator, so
it runs once (the ``pretrained`` fixture, shared by the pytest-xdist workers) and each run
starts from a copy of its ``pretrain/`` folder and TFDS data. The test phase sees the
estimator only through the parameters it produced, so one run, first-order, goes on
through X+ and evaluation (``--mode=all``, resuming the finished pre-training); the
others stop after ``--mode=metatrain``.
"""
import json
import os
import re
import shutil
import subprocess
import sys

import filelock
import jax
import numpy as np
import pytest

from bil_jax import adapt, checkpoint
from tests.test_reliability import META_STEPS, PRE_STEPS, TINY, final_state

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The default config at the smallest size the reliability tests use (16x16, width 4,
# K=1, one task per meta-batch): each run compiles its estimator once and takes seconds.
SMALL = [a for a in TINY if "estimator" not in a
        ] + ["--config.eval.is_steps=2", "--config.eval.aux_steps=1", "--config.eval.aux_tasks=1"]


def _main(workdir, mode, *overrides, env_extra=None):
  env = dict(os.environ, **(env_extra or {}))
  cmd = [
      sys.executable, "-m", "bil_jax.main", "--config=configs/synthetic.py", f"--workdir={workdir}",
      f"--mode={mode}", *SMALL, *overrides
  ]
  proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
  """A workdir holding one finished pre-training (and its TFDS data) at SMALL size.

  Made once per test session: under pytest-xdist the workers share the folder next to
  their own base temporary directories, and a file lock lets the first one make it."""
  base = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    base = base.parent
  workdir = base / "cli_pretrained"
  with filelock.FileLock(str(base / "cli_pretrained.lock")):
    if not (workdir / "done").exists():
      shutil.rmtree(workdir, ignore_errors=True)
      _main(workdir, "pretrain")
      (workdir / "done").write_text("")
  return workdir


def _leaves(tree):
  return [np.asarray(x, np.float64) for x in jax.tree.leaves(tree)]


def _run_main(pretrained, workdir, mode, *overrides, env_extra=None):
  """``mode`` in ``workdir`` from a copy of the shared pre-training; checks that
  meta-training ran to its last step from the pre-trained parameters and moved them.
  Returns (final meta-training state, proc)."""
  os.makedirs(workdir)
  for name in ("pretrain", "tfds"):
    shutil.copytree(pretrained / name, workdir / name)
  proc = _main(workdir, mode, *overrides, env_extra=env_extra)
  assert "pretrain step 1/" not in proc.stderr  # the copy was used, not trained again
  step, state = final_state(str(workdir), "meta")
  assert step == META_STEPS, step
  before = checkpoint.phase_params(str(pretrained), "pretrain")
  for net in ("G", "D"):
    after, start = _leaves(state["params"][net]), _leaves(before[net])
    assert all(np.all(np.isfinite(a)) for a in after), net
    assert any(a.shape == s.shape and not np.array_equal(a, s)
               for a, s in zip(after, start)), f"{net} did not move"
  return state, proc


@pytest.mark.parametrize(
    "estimator,options,extra",
    [
        ("reptile", "", ()),
        ("truncated", "backprop_steps=1", ()),
        ("es", "pairs=2,sigma=0.01", ()),
        ("implicit", "lam=1.0,max_iters=5", ()),
        ("second_order", "", ("--config.meta.adapt_mask=G/*",)),  # second_order, masked
    ])
def test_estimator_meta_trains_through_main(pretrained, tmp_path, estimator, options, extra):
  state, _ = _run_main(pretrained, tmp_path / "w", "metatrain",
                       f"--config.meta.estimator={estimator}",
                       f"--config.meta.estimator_options={options}", *extra)
  config = json.load(open(tmp_path / "w" / "config.json"))
  assert config["meta.estimator"] == estimator
  assert config["meta.estimator_options"] == options
  if estimator == "meta_sgd":  # its learned inner rates are part of the meta-state
    assert adapt.UPDATE_SCALE in state["params"]


def test_first_order_trains_and_evaluates_through_main(pretrained, tmp_path):
  """--mode=all resumes the copied pre-training, meta-trains, then runs X+ and the test
  phase (the programs test_no_tensorflow's run loads from the compilation cache)."""
  workdir = tmp_path / "w"
  _, proc = _run_main(pretrained, workdir, "all", "--config.meta.estimator=first_order")
  assert f"Resuming pre-training from step {PRE_STEPS}" in proc.stderr, proc.stderr[-3000:]
  with open(workdir / "eval" / "results.json") as f:
    results = json.load(f)
  assert results["rows"] and results["config"]["meta"]["estimator"] == "first_order"
  for row in results["rows"].values():
    assert 0.0 <= row["ssim"] <= 1.0 and row["mse"] >= 0.0


def test_the_documented_user_estimator_trains_through_main(pretrained, tmp_path):
  """docs/estimators.md's example, exactly as printed, selected by module:function."""
  with open(os.path.join(REPO, "docs", "estimators.md")) as f:
    doc = f.read()
  section = doc[doc.index("## A user-written estimator"):]
  code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
  assert len(code.strip().splitlines()) < 30
  (tmp_path / "my_estimators.py").write_text(code)
  _run_main(pretrained, tmp_path / "w", "metatrain",
            "--config.meta.estimator=my_estimators:scaled_first_order",
            "--config.meta.estimator_options=scale=0.5",
            env_extra={"PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"})
  config = json.load(open(tmp_path / "w" / "config.json"))
  assert config["meta.estimator"] == "my_estimators:scaled_first_order"
