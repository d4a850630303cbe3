"""Every shipped estimator, a masked variant and a user's own estimator through the CLI.

Each runs ``python -m bil_jax.main --mode=all`` end to end at smoke size, as a user
would: meta-training with that estimator, then evaluation. Pre-training does not depend
on the meta-gradient estimator, so it runs once (the ``pretrained`` fixture, shared by
the pytest-xdist workers) and each run starts from a copy of its ``pretrain/`` folder and
TFDS data: ``--mode=all`` resumes the finished pre-training (checked from its log), then
meta-trains and evaluates.
"""
import json
import os
import re
import shutil
import subprocess
import sys

import filelock
import pytest

from tests.test_reliability import PRE_STEPS, TINY

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The default config at the smallest size the reliability tests use (16x16, width 4,
# K=1, one task per meta-batch): each run compiles its estimator once and takes seconds.
SMALL = [a for a in TINY if "estimator" not in a] + ["--config.eval.is_steps=2",
                                                      "--config.eval.aux_steps=1",
                                                      "--config.eval.aux_tasks=1"]


def _main(workdir, mode, *overrides, env_extra=None):
  env = dict(os.environ, **(env_extra or {}))
  cmd = [sys.executable, "-m", "bil_jax.main", "--config=configs/synthetic.py",
         f"--workdir={workdir}", f"--mode={mode}", *SMALL, *overrides]
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


def _run_main(pretrained, workdir, *overrides, env_extra=None):
  """--mode=all in ``workdir`` from a copy of the shared pre-training: (results, proc)."""
  os.makedirs(workdir)
  for name in ("pretrain", "tfds"):
    shutil.copytree(pretrained / name, workdir / name)
  proc = _main(workdir, "all", *overrides, env_extra=env_extra)
  # The copied pre-training was found complete and resumed, not run again.
  assert f"Resuming pre-training from step {PRE_STEPS}" in proc.stderr, proc.stderr[-3000:]
  assert "pretrain step 1/" not in proc.stderr
  with open(os.path.join(workdir, "eval", "results.json")) as f:
    return json.load(f), proc


@pytest.mark.parametrize("estimator,options,extra", [
    ("first_order", "", ()),
    ("reptile", "", ()),
    ("truncated", "backprop_steps=1", ()),
    ("es", "pairs=2,sigma=0.01", ()),
    ("implicit", "lam=1.0,max_iters=5", ()),
    ("meta_sgd", "", ()),
    ("second_order", "", ("--config.meta.adapt_mask=G/*",)),   # second_order, masked
])
def test_estimator_runs_through_main(pretrained, tmp_path, estimator, options, extra):
  results, _ = _run_main(pretrained, tmp_path / "w", f"--config.meta.estimator={estimator}",
                         f"--config.meta.estimator_options={options}", *extra)
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
  results, proc = _run_main(
      pretrained, tmp_path / "w", "--config.meta.estimator=my_estimators:scaled_first_order",
      "--config.meta.estimator_options=scale=0.5",
      env_extra={"PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"})
  assert results["rows"]
  config = json.load(open(tmp_path / "w" / "config.json"))
  assert config["meta.estimator"] == "my_estimators:scaled_first_order"
