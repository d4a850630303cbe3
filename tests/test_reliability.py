"""Reliability by fault injection (issue 7; docs/reliability.md).

Runs ``python -m bil_jax.main`` in subprocesses on a tiny synthetic config and
* kills pre-training and meta-training with SIGKILL at a random step, restarts them and
  checks that they end bitwise equal to an uninterrupted run;
* sends SIGTERM and checks the checkpoint of the current step and exit status 75;
* injects a NaN loss (tests/fault_main.py) and checks it is skipped and counted in
  TensorBoard and in the checkpointed optimizer state, or, with ``nonfinite='stop'``,
  stops the run naming the step;
* meta-trains Meta-SGD, kills and resumes it, and checks that evaluation adapts with its
  learned rates.
The state guards (checkpoint fallback, non-finite guard, workdir check) are tested in
tests/test_safeguards.py, bad inputs through ``main`` in tests/test_bad_inputs.py.

Subprocesses share a JAX persistent compilation cache so that only the first run of
each program pays for compiling it. Set BIL_JAX_TEST_SEED to replay the random kill steps.
"""
import glob
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import orbax.checkpoint as ocp
import pytest

from bil_jax import checkpoint
from bil_jax import preemption

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEED = int(os.environ.get("BIL_JAX_TEST_SEED", random.SystemRandom().randrange(10 ** 6)))
PRE_STEPS, META_STEPS = 6, 4

TINY = [
    "--config.data.image_height=16",
    "--config.data.image_width=16",
    "--config.data.num_train_tasks=4",
    "--config.data.num_test_tasks=2",
    "--config.data.pairs_per_task=6",
    "--config.data.shots=2",
    "--config.data.queries=2",
    "--config.data.eval_queries=2",
    "--config.model.ngf=4",
    "--config.model.ndf=4",
    # Two U-Net levels and one PatchGAN layer: every block is there, and compiling
    # costs a third less than at the derived depth of 4.
    "--config.model.d_layers=1",
    "--config.model.num_downs=2",
    f"--config.pretrain.steps={PRE_STEPS}",
    "--config.pretrain.batch_size=2",
    "--config.pretrain.log_every=1",
    "--config.pretrain.checkpoint_every=2",
    "--config.pretrain.image_every=1000",
    f"--config.meta.steps={META_STEPS}",
    "--config.meta.meta_batch=1",
    "--config.meta.inner_steps=1",
    "--config.meta.estimator=first_order",
    "--config.meta.log_every=1",
    "--config.meta.checkpoint_every=2",
    "--config.meta.image_every=1000",
    # A 2 x 2 tuning grid of 1-2 IS steps on 2 validation tasks (the default's is 3 x 3
    # of up to 80 steps on 8).
    "--config.eval.tune_is_lrs=(0.001, 0.01)",
    "--config.eval.tune_is_steps=(1, 2)",
    "--config.eval.num_val_tasks=2",
    "--config.eval.is_steps=2"
]


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
  """Data directory shared by every run of this module. The runs use the test session's
  JAX compilation cache (tests/conftest.py), which the CLI tests share: they compile
  the same TINY programs."""
  root = tmp_path_factory.mktemp("reliability")
  return {
      "data_dir": str(root / "tfds"), "jax_cache": os.environ["JAX_COMPILATION_CACHE_DIR"],
      "root": root
  }


FAULT_MAIN = os.path.join(REPO, "tests", "fault_main.py")


def _env(shared, **extra):
  env = dict(os.environ, **extra, JAX_COMPILATION_CACHE_DIR=shared["jax_cache"],
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0", JAX_PLATFORMS="cpu")
  env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
  return env


def launch(shared, workdir, mode, *extra, log=None, nan_step=None):
  """Starts main in a subprocess; stderr (absl logs) goes to ``log``. With ``nan_step``,
  tests/fault_main.py injects NaN target images into the update producing that step."""
  entry = ["-m", "bil_jax.main"] if nan_step is None else [FAULT_MAIN]
  args = [
      sys.executable, *entry, f"--workdir={workdir}", f"--mode={mode}",
      f"--config.data.data_dir={shared['data_dir']}", *TINY, *extra
  ]
  log = log or f"{workdir}.{mode}.{time.monotonic_ns()}.log"
  out = open(log, "w")  # pylint: disable=consider-using-with
  fault = {} if nan_step is None else {"BIL_JAX_TEST_NAN_STEP": str(nan_step)}
  proc = subprocess.Popen(args, cwd=REPO, env=_env(shared, **fault), stdout=out,
                          stderr=subprocess.STDOUT)
  proc.log = log
  return proc


def run(shared, workdir, mode, *extra, timeout=420, nan_step=None):
  """Runs main to the end: (exit status, combined output)."""
  proc = launch(shared, workdir, mode, *extra, nan_step=nan_step)
  rc = proc.wait(timeout)
  with open(proc.log) as f:
    return rc, f.read()


def signal_at_step(proc, phase, step, sig, timeout=420):
  """Sends ``sig`` once the log shows ``phase`` step ``step``; returns (status, output)."""
  deadline = time.monotonic() + timeout
  needle = f" {phase} step {step}/"
  while time.monotonic() < deadline:
    with open(proc.log) as f:
      text = f.read()
    if needle in text:
      proc.send_signal(sig)
      break
    if proc.poll() is not None:
      pytest.fail(f"run ended (status {proc.returncode}) before {phase} step {step}:\n"
                  + text[-3000:])
    time.sleep(0.05)
  else:
    proc.kill()
    pytest.fail(f"no {phase} step {step} within {timeout}s")
  rc = proc.wait(timeout)
  with open(proc.log) as f:
    return rc, f.read()


def final_state(workdir, phase):
  directory = os.path.join(workdir, phase, "checkpoints")
  manager = ocp.CheckpointManager(directory)
  step = manager.latest_step()
  return step, manager.restore(step)


def assert_bitwise_equal(a, b):
  flat_a = dict(_leaves(a))
  flat_b = dict(_leaves(b))
  assert flat_a.keys() == flat_b.keys()
  for k, v in flat_a.items():
    v, w = np.asarray(v), np.asarray(flat_b[k])
    assert v.dtype == w.dtype and v.shape == w.shape, k
    assert v.tobytes() == w.tobytes(), f"{k} differs"


def _leaves(tree, prefix=""):
  if isinstance(tree, dict):
    for k, v in tree.items():
      yield from _leaves(v, f"{prefix}/{k}")
  elif isinstance(tree, (list, tuple)):
    for i, v in enumerate(tree):
      yield from _leaves(v, f"{prefix}/{i}")
  else:
    yield prefix, tree


def _ok(rc, out):
  assert rc == 0, out[-4000:]


def test_sigkill_at_random_steps_then_resume_is_bitwise_identical(shared):
  """Pre-training and meta-training killed with SIGKILL at random steps, restarted, end
  with parameters and optimizer states (skip counters included) bitwise equal to a run
  never interrupted (replay with BIL_JAX_TEST_SEED)."""
  rng = random.Random(SEED)
  kill_pre, kill_meta = rng.randint(1, PRE_STEPS - 1), rng.randint(1, META_STEPS - 1)
  print(f"BIL_JAX_TEST_SEED={SEED}: SIGKILL at pretrain step {kill_pre}, meta step "
        f"{kill_meta}")
  ref, cut = str(shared["root"] / "ref"), str(shared["root"] / "cut")
  _ok(*run(shared, ref, "pretrain"))
  _ok(*run(shared, ref, "metatrain"))

  rc, _ = signal_at_step(launch(shared, cut, "pretrain"), "pretrain", kill_pre, signal.SIGKILL)
  assert rc == -signal.SIGKILL
  # Saves are asynchronous: a kill may land before any checkpoint is complete (the tiny
  # steps take milliseconds, a write longer). A restart must resume exactly when one was
  # complete on disk; either way the final state must be bitwise equal (below).
  # (Orbax writes a step into a temporary folder and renames it to the step number.)
  ckpts = os.path.join(cut, "pretrain", "checkpoints")
  saved = [n for n in os.listdir(ckpts) if n.isdigit()] if os.path.isdir(ckpts) else []
  rc, out = run(shared, cut, "pretrain")
  _ok(rc, out)
  assert ("Resuming pre-training" in out) == bool(saved), (saved, out[-2000:])
  rc, _ = signal_at_step(launch(shared, cut, "metatrain"), "meta", kill_meta, signal.SIGKILL)
  assert rc == -signal.SIGKILL
  _ok(*run(shared, cut, "metatrain"))

  for phase, steps in (("pretrain", PRE_STEPS), ("meta", META_STEPS)):
    (s_ref, a), (s_cut, b) = final_state(ref, phase), final_state(cut, phase)
    assert s_ref == s_cut == steps
    assert_bitwise_equal(a, b)


def test_sigterm_checkpoints_the_current_step_and_exits_75(shared):
  """SIGTERM: the loop finishes its step, checkpoints it (off the checkpoint_every grid)
  and exits with status 75; a rerun resumes from that step."""
  workdir = str(shared["root"] / "term")
  proc = launch(shared, workdir, "pretrain", "--config.pretrain.steps=1000",
                "--config.pretrain.checkpoint_every=1000")
  rc, out = signal_at_step(proc, "pretrain", 3, signal.SIGTERM)
  assert rc == preemption.PREEMPTED_EXIT_CODE, out[-3000:]
  line = [l for l in out.splitlines() if l.startswith("preempted: SIGTERM at pretrain step")]
  assert line, out[-3000:]
  step = int(line[0].split("step ")[1].split(":")[0])
  assert step >= 3
  assert final_state(workdir, "pretrain")[0] == step
  assert "Traceback" not in out


def _tensorboard_scalars(logdir, tag):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  values = {}
  for path in glob.glob(os.path.join(logdir, "events.out.tfevents.*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      for v in event.summary.value:
        if v.tag == tag:
          values[event.step] = float(tf.make_ndarray(
              v.tensor)) if v.HasField("tensor") else v.simple_value
  return values


def _skip_counters(state) -> list:
  """The skip counters of a restored state's guarded optimizers (bil_jax.nonfinite)."""
  return [int(np.asarray(v)) for k, v in _leaves(state["opt_state"]) if k.endswith("skips")]


def test_injected_nan_is_skipped_counted_and_logged(shared):
  """nonfinite='skip': the NaN update of step 3 is skipped, the counter reaches 1 in
  TensorBoard and in the checkpointed optimizer states of G and D, and the checkpoints
  hold finite parameters."""
  workdir = str(shared["root"] / "nan_skip")
  rc, out = run(shared, workdir, "pretrain", nan_step=3)
  _ok(rc, out)
  skips = _tensorboard_scalars(os.path.join(workdir, "pretrain"), "nonfinite_skips")
  assert skips[2] == 0 and skips[3] == 1 and skips[PRE_STEPS] == 1, skips
  step, state = final_state(workdir, "pretrain")
  assert _skip_counters(state) == [1, 1]  # G's and D's optimizer each skipped step 3
  assert not checkpoint.nonfinite_leaves(state)


def test_injected_nan_with_stop_exits_naming_the_step(shared):
  workdir = str(shared["root"] / "nan_stop")
  rc, out = run(shared, workdir, "pretrain", "--config.nonfinite=stop", nan_step=3)
  assert rc == 1, out[-3000:]
  assert out.strip().splitlines()[-1].startswith(
      "error: non-finite loss or update at pretrain step 3 ")
  assert "Traceback" not in out
  assert final_state(workdir, "pretrain")[0] == 2  # nothing non-finite was written


def _config_of(workdir):
  """The config a workdir was made with (configs/synthetic.py + its config.json)."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  import json  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location("synthetic_cfg",
                                                os.path.join(REPO, "configs", "synthetic.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  with open(os.path.join(workdir, "config.json")) as f:
    flat = json.load(f)
  with config.unlocked():
    for key, value in flat.items():
      *path, leaf = key.split(".")
      node = config
      for p in path:
        node = node[p]
      node[leaf] = tuple(value) if isinstance(value, list) else value
  return config


def test_meta_sgd_rates_survive_sigkill_resume_and_reach_evaluation(shared):
  """Meta-SGD's learned inner rates are checkpointed, resume bitwise after SIGKILL, and
  are what evaluation loads and adapts with."""
  import jax  # pylint: disable=g-import-not-at-top
  from bil_jax import adapt, builders  # pylint: disable=g-import-not-at-top
  msgd = ("--config.meta.estimator=meta_sgd",)
  ref, cut = str(shared["root"] / "msgd_ref"), str(shared["root"] / "msgd_cut")
  _ok(*run(shared, ref, "pretrain", *msgd))
  shutil.copytree(os.path.join(ref, "pretrain"), os.path.join(cut, "pretrain"))
  shutil.copy(os.path.join(ref, "config.json"), os.path.join(cut, "config.json"))
  _ok(*run(shared, ref, "metatrain", *msgd))
  kill = random.Random(SEED + 1).randint(1, META_STEPS - 1)
  rc, _ = signal_at_step(launch(shared, cut, "metatrain", *msgd), "meta", kill, signal.SIGKILL)
  assert rc == -signal.SIGKILL
  _ok(*run(shared, cut, "metatrain", *msgd))
  (s_ref, a), (s_cut, b) = final_state(ref, "meta"), final_state(cut, "meta")
  assert s_ref == s_cut == META_STEPS
  assert_bitwise_equal(a, b)
  scale = a["params"][adapt.UPDATE_SCALE]
  assert not all(np.all(np.asarray(x) == 1.0) for x in jax.tree.leaves(scale))  # learned

  # Evaluation loads the rates with the GP, and adapting with them differs from
  # adapting the same G and D without them.
  gp = checkpoint.phase_params(ref, "meta")
  assert adapt.UPDATE_SCALE in gp
  config = _config_of(ref)
  inner = builders.inner_loop(config, builders.build_spec(config, config.data.num_classes))
  x = np.random.default_rng(0)
  hw = (config.data.image_height, config.data.image_width)
  support = {
      "map": x.integers(0, config.data.num_classes, (2, *hw)).astype(np.int32),
      "image": x.uniform(-1, 1, (2, *hw, 3)).astype(np.float32),
      "ref": x.uniform(-1, 1, (2, *hw, 3)).astype(np.float32)
  }
  with_rates, _ = adapt.adapt(inner, gp, support, jax.random.PRNGKey(0))
  without, _ = adapt.adapt(inner, adapt.networks(gp), support, jax.random.PRNGKey(0))
  diff = sum(
      float(np.abs(np.asarray(u) - np.asarray(v)).sum())
      for u, v in zip(jax.tree.leaves(adapt.networks(with_rates)), jax.tree.leaves(without)))
  assert diff > 0
