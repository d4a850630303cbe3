"""README's commands still parse: config files and arguments load, every --config.a.b key
exists, --mode is valid. Nothing is run."""
import importlib.util
import os
import re
import shlex

import pytest

from bil_jax import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAIN = "python -m bil_jax.main"


def readme_commands(path: str = os.path.join(ROOT, "README.md")) -> list:
  """The ``python -m bil_jax.main`` commands of the ```sh blocks, continuation lines joined
  and anything before the command (``pip install ... &&``) or after it (``&&``, ``;``) cut."""
  with open(path) as f:
    blocks = re.findall(r"```sh\n(.*?)```", f.read(), re.S)
  commands = []
  for block in blocks:
    for line in block.replace("\\\n", " ").splitlines():
      if MAIN in line:
        rest = line[line.index(MAIN) + len(MAIN):]
        commands.append(re.split(r"&&|;|\|", rest)[0].strip())
  return commands


def load_config(spec: str):
  """``configs/x.py[:arg]`` -> its get_config(arg), as ml_collections' config flag does."""
  path, _, arg = spec.partition(":")
  module_spec = importlib.util.spec_from_file_location("readme_config", os.path.join(ROOT, path))
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()


def check_command(command: str) -> None:
  """Raises AssertionError naming the part of ``command`` that does not parse."""
  args = dict(a[2:].split("=", 1) for a in shlex.split(command))
  assert "workdir" in args, f"{command}: no --workdir"
  assert args.get("mode", "all") in cli.MODES, f"{command}: --mode={args['mode']}"
  config = load_config(args.get("config", "configs/synthetic.py"))
  for key in (k[len("config."):] for k in args if k.startswith("config.")):
    node = config
    for part in key.split("."):
      assert part in node, f"{command}: no config key {key!r}"
      node = node[part]


def test_readme_has_short_commands():
  commands = readme_commands()
  assert len(commands) >= 3 and any(":smoke" in c for c in commands), commands


@pytest.mark.parametrize("command", readme_commands())
def test_readme_command_parses(command):
  check_command(command)


def test_a_broken_command_is_caught():
  with pytest.raises(AssertionError, match="no config key 'meta.stepz'"):
    check_command("--config=configs/synthetic.py --workdir=/tmp/x --config.meta.stepz=3")
  with pytest.raises(AssertionError, match="--mode=train"):
    check_command("--config=configs/synthetic.py --workdir=/tmp/x --mode=train")
