"""Reliability by fault injection (issue 7; docs/reliability.md).

Runs ``python -m bil_jax.main`` in subprocesses on a tiny synthetic config and
* kills pre-training and meta-training with SIGKILL at a random step, restarts them and
  checks that they end bitwise equal to an uninterrupted run;
* sends SIGTERM and checks the checkpoint of the current step and exit status 75;
* injects a NaN loss (tests/fault_main.py) and checks it is skipped and counted in
  TensorBoard and in the checkpointed optimizer state, or, with ``nonfinite='stop'``,
  stops the run naming the step;
* truncates the latest checkpoint and checks the fallback to the previous one;
* feeds bad inputs and checks the one-line ``error:``, exit status 1 and no output.

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
from PIL import Image

from bil_jax import checkpoint
from bil_jax import config_lib
from bil_jax import errors
from bil_jax import preemption
from bil_jax import workdirs
from tests import fixtures_datasets as fx

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
