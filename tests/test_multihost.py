"""The whole ``python -m bil_jax.main`` run on two real processes (issue 14).

Two processes on one machine (CPU collectives 'gloo', a coordinator on 127.0.0.1) run
``--mode=all`` on a tiny smoke config; a one-process run of the same config is the
reference. The runs are shared by the tests of this module (a module fixture):

* two processes: ``--mode=all`` on workdir ``two``, interrupted twice: SIGTERM to process
  1 alone in pre-training (JAX's preemption service stops both at the same step, exit
  status 75), then, after a restart of both, SIGKILL to both in meta-training; a third
  start of both finishes the run;
* one process: ``--mode=pretrain`` on ``one``, copied to ``again``; ``--mode=metatrain``
  on ``one`` with a fresh compilation cache, then the same command on ``again`` (it must
  load every program); ``--mode=xplus`` and ``--mode=evaluate`` on ``one``.

Then the latest pre-training checkpoint of ``two`` is damaged and both processes rerun
``--mode=pretrain``: it is set aside, the previous one restored, and the run ends where
it ended before.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import filelock
import jax
import numpy as np
import pytest

from bil_jax import checkpoint, compile_cache

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = [
    "--config=configs/synthetic.py:smoke",
    "--config.data.image_height=16",
    "--config.data.image_width=16",
    "--config.model.ngf=4",
    "--config.model.ndf=4",
    "--config.model.d_layers=1",
    "--config.model.num_downs=2",
    "--config.eval.is_steps=1",
    "--config.eval.aux_steps=1",
    # Room for the interruptions of the two-process run (interrupted_two).
    "--config.pretrain.steps=4",
    "--config.meta.steps=3"
]
TIMEOUT = 600
# Pre-training averages the gradient over 2 devices (one row each) and meta-training the
# meta-gradient over 2 devices (one task each), where one process averages 2 rows or tasks
# on one device: the same numbers up to float summation order. Evaluation gives each
# process's device its own test tasks.
# Measured (smoke config, 2 pre-training steps and 2 meta-steps, Adam): pre-training
# parameters within 3.7e-9, meta-training parameters within 4.4e-7, results.json
# metrics within 1.1e-6 (relative). The tolerances leave a margin of 20x and 100x.
PARAM_ATOL, METRIC_RTOL = 1e-5, 1e-4


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _env(cache: str, **extra) -> dict:
  env = dict(
      os.environ, JAX_COMPILATION_CACHE_DIR=cache, JAX_PLATFORMS="cpu",
      XLA_FLAGS=os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=1",
      **extra)
  for key in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
    if key not in extra:
      env.pop(key, None)
  env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
  return env


def _start(workdir, mode, cache, log, **env):
  args = [
      sys.executable, "-m", "bil_jax.main", f"--workdir={workdir}", f"--mode={mode}", *TINY,
      f"--config.data.data_dir={os.path.dirname(workdir)}/tfds"
  ]
  with open(log, "w") as out:
    return subprocess.Popen(args, cwd=REPO, env=_env(cache, **env), stdout=out,
                            stderr=subprocess.STDOUT)


def _start_two(workdir, mode, cache, logs):
  port = _free_port()
  return [
      _start(workdir, mode, cache, logs[i], JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
             JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(i)) for i in (0, 1)
  ]


def _wait_for(procs, log, needle):
  """Waits until ``log`` holds ``needle``; fails with the log if a process ends first."""
  deadline = time.monotonic() + TIMEOUT
  while time.monotonic() < deadline:
    with open(log) as f:
      text = f.read()
    if needle in text:
      return
    if any(p.poll() is not None for p in procs):
      for p in procs:
        p.kill()
      pytest.fail(f"a process ended before {needle!r}:\n{text[-3000:]}")
    time.sleep(0.05)
  for p in procs:
    p.kill()
  pytest.fail(f"no {needle!r} within {TIMEOUT}s")


def _statuses(procs, logs):
  """Waits for ``procs`` (killing one that outlasts TIMEOUT): (exit statuses, log texts)."""
  codes = []
  for p in procs:
    try:
      codes.append(p.wait(TIMEOUT))
    except subprocess.TimeoutExpired:
      p.kill()
      codes.append("timeout")
  texts = []
  for log in logs:
    with open(log) as f:
      texts.append(f.read())
  return codes, texts


def interrupted_two(workdir, cache):
  """``--mode=all`` on two processes, stopped by SIGTERM to process 1 alone (pre-training)
  and by SIGKILL to both (meta-training), each time restarted; returns the last logs, the
  'preempted:' lines of the SIGTERM stop and the process ids of process 0's three starts."""
  logs = [f"{workdir}.all.p{i}.term.log" for i in (0, 1)]
  procs = _start_two(workdir, "all", cache, logs)
  pids0 = [procs[0].pid]
  _wait_for(procs, logs[0], " pretrain step 1/")
  procs[1].send_signal(signal.SIGTERM)
  codes, texts = _statuses(procs, logs)
  if codes != [75, 75]:
    pytest.fail(f"SIGTERM to process 1: exit statuses {codes}, not [75, 75]:\n"
                + "\n".join(t[-3000:] for t in texts))
  preempted = [[l for l in t.splitlines() if l.startswith("preempted: ")] for t in texts]
  logs = [f"{workdir}.all.p{i}.kill.log" for i in (0, 1)]
  procs = _start_two(workdir, "all", cache, logs)
  pids0.append(procs[0].pid)
  _wait_for(procs, logs[0], " meta step ")
  for p in procs:
    p.kill()
  codes, _ = _statuses(procs, logs)
  assert codes == [-signal.SIGKILL] * 2, codes
  logs = [f"{workdir}.all.p{i}.log" for i in (0, 1)]
  procs = _start_two(workdir, "all", cache, logs)
  pids0.append(procs[0].pid)
  return _finish(procs, logs), preempted, pids0


def _finish(procs, logs):
  """Waits for ``procs``; fails with the logs unless all exit 0; returns the logs."""
  codes, texts = _statuses(procs, logs)
  if any(c != 0 for c in codes):
    pytest.fail(f"exit statuses {codes}:\n" + "\n".join(t[-3000:] for t in texts))
  return texts


def run_one(workdir, mode, cache):
  """One process; returns its log."""
  log = f"{workdir}.{mode}.log"
  return _finish([_start(workdir, mode, cache, log)], [log])[0]


def run_two(workdir, mode, cache):
  """Two processes joined through a coordinator on 127.0.0.1; returns their logs."""
  logs = [f"{workdir}.{mode}.p{i}.log" for i in (0, 1)]
  return _finish(_start_two(workdir, mode, cache, logs), logs)


def compile_summary(log: str) -> tuple:
  """(XLA compile seconds, programs, programs loaded from the persistent cache) of the
  summary line main logs at its end."""
  found = compile_cache.parse_summary(log)
  assert found, "main did not log its compile time"
  return found


def final_params(workdir, phase):
  """The newest checkpoint's parameters of ``WORKDIR/phase`` as one flat vector."""
  params = checkpoint.phase_params(str(workdir), phase)
  return np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(params)])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """The runs of the module docstring, made once per test session: under pytest-xdist
  the workers share a folder next to their own base temporary directories, and a file
  lock lets the first one make it (the others wait and read its logs)."""
  base = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    base = base.parent
  root = base / "multihost"
  shared_cache = os.environ.get("JAX_COMPILATION_CACHE_DIR") or str(base / "multihost_cache")
  fresh_cache = str(root / "fresh_cache")
  two, one, again = root / "two", root / "one", root / "again"
  with filelock.FileLock(str(base / "multihost.lock")):
    if not (root / "logs.json").exists():
      shutil.rmtree(root, ignore_errors=True)
      root.mkdir()
      # Two processes first: process 0 stores the per-process programs (pre-training,
      # evaluation) in the shared cache, and the one-process run loads them.
      logs_two, preempted, pids0 = interrupted_two(two, shared_cache)
      run_one(one, "pretrain", shared_cache)
      shutil.copytree(one, again)
      first = run_one(one, "metatrain", fresh_cache)
      second = run_one(again, "metatrain", fresh_cache)
      run_one(one, "xplus", shared_cache)
      run_one(one, "evaluate", shared_cache)
      (root / "logs.json").write_text(
          json.dumps({
              "logs_two": logs_two, "first": first, "second": second, "preempted": preempted,
              "pids0": pids0
          }))
  logs = json.loads((root / "logs.json").read_text())
  return {"root": root, "two": two, "one": one, "again": again, "cache": shared_cache, **logs}


def test_two_processes_match_one(runs):
  """results.json and the final parameters of the two-process run (stopped by SIGTERM to
  one process and by SIGKILL to both, and restarted) equal the one-process run's; only
  process 0 wrote the shared files."""
  two, one = runs["two"], runs["one"]
  # SIGTERM reached process 1 alone; both stopped at the same step with a checkpoint.
  (line0,), (line1,) = runs["preempted"]
  assert line0 == line1 and line0.startswith("preempted: SIGTERM at "), runs["preempted"]
  np.testing.assert_allclose(final_params(two, "pretrain"), final_params(one, "pretrain"), rtol=0,
                             atol=PARAM_ATOL)
  for phase in ("meta", "xplus"):
    np.testing.assert_allclose(final_params(two, phase), final_params(one, phase), rtol=0,
                               atol=PARAM_ATOL, err_msg=phase)
  with open(two / "eval" / "results.json") as f:
    got = json.load(f)
  with open(one / "eval" / "results.json") as f:
    want = json.load(f)
  assert got["row_ids"] == want["row_ids"]
  for row, metrics in want["per_task"].items():
    for name, values in metrics.items():
      np.testing.assert_allclose(got["per_task"][row][name], values, rtol=METRIC_RTOL,
                                 err_msg=f"{row} {name}")
  # Process 1 wrote no TensorBoard events: every events file is one of process 0's
  # starts (named events.out.tfevents.<time>.<host>.<pid>.<n>.v2), at most one per start.
  for phase in ("pretrain", "meta", "xplus", "eval"):
    events = [n for n in os.listdir(two / phase) if n.startswith("events.out")]
    pids = [int(n.split(".")[-3]) for n in events]
    assert events and set(pids) <= set(runs["pids0"]) and len(
        set(pids)) == len(pids), (phase, events, runs["pids0"])
  for log in runs["logs_two"]:
    assert "XLA compile time" in log


def test_second_identical_run_does_not_recompile(runs):
  """With a fresh persistent cache, the first --mode=metatrain compiles every program and the
  second identical one loads every program from the cache, in less time."""
  first, second = compile_summary(runs["first"]), compile_summary(runs["second"])
  print(f"compile time: first {first[0]:.2f} s, second {second[0]:.2f} s")
  assert first[1] > 0 and first[2] == 0, first
  assert second[1:] == (first[1], first[1]) and second[0] < first[0], (first, second)
  assert final_params(runs["one"], "meta").tolist() == final_params(runs["again"], "meta").tolist()


def test_one_cpu_device_per_core_changes_no_number(runs, tmp_path):
  """``python -m bil_jax.main`` as a user runs it on a 2-core CPU (XLA_FLAGS without a
  device count; BIL_JAX_CPU_DEVICES=2 stands for the 2 cores): evaluation runs its tasks
  on 2 XLA CPU devices, training on the first, and every checkpoint and results.json
  metric equals the one-device run's bitwise."""
  workdir = tmp_path / "cores"
  env = _env(runs["cache"], BIL_JAX_CPU_DEVICES="2")
  env["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "")
  proc = subprocess.run([
      sys.executable, "-m", "bil_jax.main", f"--workdir={workdir}", "--mode=all", *TINY,
      f"--config.data.data_dir={tmp_path}/tfds"
  ], cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT)
  log = proc.stdout + proc.stderr
  assert proc.returncode == 0, log[-3000:]
  assert "2 XLA CPU devices" in log and "test tasks on 2 devices" in log, log[-3000:]
  for phase in ("pretrain", "meta", "xplus"):
    assert final_params(workdir, phase).tolist() == final_params(runs["one"], phase).tolist(), phase
  got, want = (
      json.loads((w / "eval" / "results.json").read_text()) for w in (workdir, runs["one"]))
  assert got["per_task"] == want["per_task"] and got["tuning"] == want["tuning"]


def test_two_processes_set_a_damaged_checkpoint_aside(runs):
  """A damaged latest checkpoint is set aside (once, by process 0, for both) and the
  previous one restored by both; the run ends bitwise where it ended before, and intact
  checkpoints stay where they are."""
  # A copy (next to the shared TFDS data), so the other tests read the run unchanged.
  two = runs["root"] / "two_damaged"
  shutil.copytree(runs["two"], two)
  ckpts = two / "pretrain" / "checkpoints"
  before = final_params(two, "pretrain")
  steps = sorted(int(n) for n in os.listdir(ckpts) if n.isdigit())
  latest = steps[-1]
  meta_steps = sorted(os.listdir(two / "meta" / "checkpoints"))
  for dirpath, _, files in os.walk(ckpts / str(latest)):
    for name in files:
      if name not in ("_CHECKPOINT_METADATA", "commit_success.txt"):
        with open(os.path.join(dirpath, name), "r+b") as f:
          f.truncate(max(0, os.path.getsize(os.path.join(dirpath, name)) // 2))
  logs = run_two(two, "pretrain", runs["cache"])
  assert os.path.isdir(ckpts.parent / "checkpoints.unreadable" / str(latest))
  assert os.listdir(ckpts.parent / "checkpoints.unreadable") == [str(latest)]
  for log in logs:
    assert f"Resuming pre-training from step {steps[-2]}" in log
  assert f"Checkpoint {latest} in" in logs[0]
  assert sorted(int(n) for n in os.listdir(ckpts) if n.isdigit()) == steps
  assert sorted(os.listdir(two / "meta" / "checkpoints")) == meta_steps
  assert final_params(two, "pretrain").tolist() == before.tolist()


def test_a_failed_collective_restore_moves_nothing(tmp_path, monkeypatch):
  """When process 0 read a checkpoint but the processes' joint restore fails (a
  coordination error, say), restore raises a one-line CheckpointError and moves nothing."""
  directory = str(tmp_path / "checkpoints")
  ckpt = checkpoint.Checkpointer(directory)
  state = {"step": np.asarray(1, np.int64), "params": {"w": np.arange(3, dtype=np.float32)}}
  ckpt.save(1, state)
  ckpt.close()  # the save is complete
  ckpt = checkpoint.Checkpointer(directory)
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  monkeypatch.setattr(checkpoint.parallel, "broadcast_from_main", lambda v: np.asarray(v, np.int32))

  def coordination_error(*args, **kwargs):
    raise RuntimeError("DEADLINE_EXCEEDED: Barrier timed out\nmore lines")

  # pylint: disable-next=protected-access
  monkeypatch.setattr(ckpt._manager, "restore", coordination_error)
  with pytest.raises(checkpoint.CheckpointError, match="could not restore checkpoint 1 ") as e:
    ckpt.restore(state)
  assert "\n" not in str(e.value) and "nothing was moved" in str(e.value)
  assert os.listdir(directory) == ["1"]
  assert not os.path.exists(directory + ".unreadable")
  monkeypatch.undo()
  restored, step = ckpt.restore(state)
  assert step == 1 and restored["params"]["w"].tolist() == [0, 1, 2]
  ckpt.close()
