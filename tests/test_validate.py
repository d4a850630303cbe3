"""Bad input is caught before a run does any work: one line naming the key, nothing written."""
import os
import subprocess
import sys

import pytest
from absl import flags
from ml_collections import config_flags

from bil_jax import cli, validate
from configs import synthetic

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _smoke(**overrides):
  c = synthetic.get_config("smoke")
  for key, value in overrides.items():
    node = c
    *parents, last = key.split(".")
    for p in parents:
      node = node[p]
    node[last] = value
  return c


@pytest.mark.parametrize("overrides,mode,expected", [
    ({"meta.estimator": "secnd_order"}, "all", "meta.estimator='secnd_order' is not one of"),
    ({"meta.estimator": "truncated", "meta.estimator_options": "backprop_step=2"
     }, "all", "did you mean 'backprop_steps'"),
    ({"meta.inner_optimizer.name": "adamm"
     }, "all", "meta.inner_optimizer.name='adamm' is not an optax optimizer"),
    ({"optim.schedule.name": "cosine_decay_schedul"
     }, "all", "did you mean 'cosine_decay_schedule'"),
    ({"pretrain.steps": -5}, "all", "pretrain.steps=-5: must be >= 1"),
    ({"meta.steps": 0}, "metatrain", "meta.steps=0: must be >= 1"),
    ({"model.d_layers": 6}, "pretrain", "model.d_layers=6"),
    ({"meta.mesh_shape": "3x1"}, "all", "meta.mesh_shape='3x1'"),
    ({"data.name": "synthetc"}, "all", "did you mean 'synthetic'"),
    ({}, "metatrain", "--mode=metatrain: no pre-trained model"),
    ({}, "evaluate", "--mode=evaluate: no pretrain or meta or xplus checkpoint"),
    ({}, "xplus", "--mode=xplus: no pre-trained model"),
    ({}, "tune", "--mode=tune: no pre-trained model"),
    ({}, "predict", "--mode='predict' is not one of"),
])
def test_each_fault_is_one_line_naming_the_key(tmp_path, overrides, mode, expected):
  workdir = str(tmp_path / "w")
  lines = validate.problems(_smoke(**overrides), workdir, mode)
  assert any(expected in line for line in lines), lines
  assert all("\n" not in line for line in lines)
  if overrides.get("meta.estimator") == "secnd_order":
    assert "did you mean 'second_order'" in lines[0]
  with pytest.raises(validate.ConfigError):
    validate.check(_smoke(**overrides), workdir, mode)
  assert not os.path.exists(workdir)


def test_a_valid_config_passes_and_from_scratch_needs_no_pretraining(tmp_path):
  assert validate.problems(_smoke(), str(tmp_path / "w"), "all") == []
  c = _smoke(**{"meta.from_scratch": True})
  assert validate.problems(c, str(tmp_path / "w"), "metatrain") == []


def test_an_uncreatable_workdir_is_named(tmp_path):
  lines = validate.problems(_smoke(), "/proc/x", "all")
  assert lines == ["--workdir=/proc/x: cannot create it under /proc (No such file or directory)"]
  blocker = tmp_path / "file"
  blocker.write_text("")
  assert f"{blocker} is not a folder" in validate.problems(_smoke(), str(blocker / "w"))[0]
  assert os.listdir(tmp_path) == ["file"]  # the probe left nothing behind


def _parse(argv, monkeypatch):
  """Parses ``argv`` with a fresh config flag as bil_jax.main does; the SystemExit."""
  monkeypatch.setattr(sys, "argv", argv)
  fv = flags.FlagValues()
  with pytest.raises(SystemExit) as exit_info:
    try:
      config_flags.DEFINE_config_file("config", None, "", flag_values=fv, lock_config=True)
      fv(argv)
      fv.config.keys()
    except flags.Error as e:
      cli.fail(cli.error_text(e))
    except (AttributeError, KeyError, TypeError, ValueError) as e:
      cli.bad_override(e, argv)
  return exit_info.value


def test_config_file_errors_are_one_line_without_traceback(monkeypatch, capsys):
  os.chdir(REPO)
  assert _parse(["m", "--config=configs/synthetic.py:smokee"], monkeypatch).code == 1
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "Traceback" not in err and "File " not in err
  assert "config argument 'smokee': use pix2pix or pg2" in err
  assert _parse(["m", "--config=configs/synthetic.py:smoke", "--config.meta.stepz=3"],
                monkeypatch).code == 1
  assert capsys.readouterr().err == (
      "error: unknown config key in --config.meta.stepz=3 (no key 'stepz'; did you mean "
      "'steps'?)\n")


def test_ctrl_c_at_start_up_is_one_line(monkeypatch, capsys):
  from bil_jax import main  # pylint: disable=import-outside-toplevel

  def interrupted(*args, **kwargs):
    raise KeyboardInterrupt

  monkeypatch.setattr(main.app, "run", interrupted)
  with pytest.raises(SystemExit) as exit_info:
    main.run()
  assert exit_info.value.code == 130
  assert capsys.readouterr().err.count("\n") == 1


def test_the_command_line_prints_each_fault_and_writes_nothing(tmp_path):
  """One run of main with several faults: one 'error:' line each, exit 1, no workdir."""
  workdir = tmp_path / "w"
  proc = subprocess.run([
      sys.executable, "-m", "bil_jax.main", "--config=configs/synthetic.py:smoke",
      f"--workdir={workdir}", "--config.meta.estimator=secnd_order", "--config.pretrain.steps=-5",
      "--config.compilation_cache="
  ], cwd=REPO, capture_output=True, text=True, timeout=300, env=dict(os.environ, PYTHONPATH=REPO),
                        check=False)
  errors = [l for l in proc.stderr.splitlines() if l.startswith("error: ")]
  assert proc.returncode == 1, proc.stderr[-2000:]
  assert len(errors) == 2 and "did you mean 'second_order'" in errors[0], errors
  assert "pretrain.steps=-5" in errors[1]
  assert "Traceback" not in proc.stderr
  assert not workdir.exists()
