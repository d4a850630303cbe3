"""The code is in the style setup.cfg's [yapf] section gives, checked with the pinned yapf.

To apply the style, from the repository root:
  yapf --in-place --recursive --parallel bil_jax configs data_prep tests setup.py
"""
import os
import re
import subprocess
import sys
from typing import List, Sequence

import pytest
import yapf

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STYLE = os.path.join(REPO, "setup.cfg")
TARGETS = ("bil_jax", "configs", "data_prep", "tests", "setup.py")
APPLY = "yapf --in-place --recursive --parallel " + " ".join(TARGETS)
_ORIGINAL_HEADER = re.compile(r"^--- (.+)\t\(original\)$", re.M)


def pinned_yapf() -> str:
  """The yapf version constraints.txt pins, e.g. '0.43.0'."""
  with open(os.path.join(REPO, "constraints.txt")) as f:
    match = re.search(r"^yapf==(\S+)$", f.read(), re.M)
  assert match, "constraints.txt: no 'yapf==VERSION' line"
  return match.group(1)


def unformatted(paths: Sequence[str], cwd: str) -> List[str]:
  """The files under `paths` (relative to `cwd`) that yapf would change, sorted.

  Runs yapf in diff mode with setup.cfg's style, every core working, and reads the
  changed files from the diff's headers. Raises RuntimeError with yapf's message when
  yapf cannot check a file (a syntax error, a missing module).
  """
  cmd = [sys.executable, "-m", "yapf", f"--style={STYLE}", "--diff", "--recursive", "--parallel"]
  proc = subprocess.run(cmd + list(paths), cwd=cwd, capture_output=True, text=True, check=False)
  if proc.returncode not in (0, 1) or proc.stderr.strip():
    raise RuntimeError(f"yapf exited with status {proc.returncode}: {proc.stderr.strip()}")
  return sorted(set(_ORIGINAL_HEADER.findall(proc.stdout)))


def test_the_pinned_yapf_runs():
  assert yapf.__version__ == pinned_yapf(), (
      f"yapf {yapf.__version__} is installed, constraints.txt pins {pinned_yapf()}: "
      "pip install -c constraints.txt -e '.[test]'")


def test_the_check_names_each_unformatted_file_and_only_those(tmp_path):
  (tmp_path / "ugly.py").write_text("def f( a,b ):\n    return {'a':a,\n 'b':b}\n")
  (tmp_path / "tidy.py").write_text('"""Tidy."""\n\n\ndef f(a, b):\n  return {"a": a, "b": b}\n')
  (tmp_path / "broken.py").write_text("def f(:\n")
  assert unformatted(["ugly.py", "tidy.py"], str(tmp_path)) == ["ugly.py"]
  with pytest.raises(RuntimeError, match="broken.py"):
    unformatted(["broken.py"], str(tmp_path))


def test_the_code_is_formatted():
  bad = unformatted(TARGETS, REPO)
  if bad:
    pytest.fail(
        f"{len(bad)} files are not in setup.cfg's yapf style; apply it with: {APPLY}\n"
        + "\n".join(bad), pytrace=False)
