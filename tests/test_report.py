"""bil_jax.report on fabricated results.json files: one run's table and several seeds pooled."""
import json
import re
import os
import subprocess
import sys

import numpy as np
import pytest

from bil_jax import report, rows

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TASKS = [f"scene_{i:03d}" for i in range(8)]


def fake_results(seed: int, bil_gain: float = 0.02, shots: int = 5) -> dict:
  """A results.json dict as evaluate writes it, with BiL better than X (n-shot) by bil_gain."""
  rng = np.random.default_rng(seed)
  names = {k: v for k, v in rows.row_names("pix2pix", shots).items()
           if k in ("x", "x_nshot", "bil_noaux", "bil", "gp")}
  base = rng.uniform(0.3, 0.5, len(TASKS))
  ssim = {"x": base - 0.1, "x_nshot": base, "bil_noaux": base + bil_gain / 2,
          "bil": base + bil_gain + rng.normal(0, 0.002, len(TASKS)), "gp": base - 0.08}
  per_task = {names[k]: {"ssim": v.tolist(), "mse": (0.1 - v / 10).tolist(),
                         "psnr": (10 + 20 * v).tolist()} for k, v in ssim.items()}
  means = {n: {"lpips": None, **{m: float(np.mean(v)) for m, v in r.items()}}
           for n, r in per_task.items()}
  return {"rows": means, "per_task": per_task, "task_names": TASKS, "row_ids": names,
          "seed": seed, "config": {"seed": seed, "data": {"shots": shots, "name": "synthetic"}}}


def write(tmp_path, name: str, result: dict) -> str:
  d = tmp_path / name / "eval"
  d.mkdir(parents=True)
  (d / "results.json").write_text(json.dumps(result))
  return str(tmp_path / name)


def test_run_summary_and_markdown_show_intervals_and_the_claims():
  r = fake_results(0)
  summary = report.run_summary(r["per_task"], r["row_ids"])
  bil = summary["rows"]["BiL-Pix2pix (5-shot)"]["ssim"]
  assert bil["ci_low"] < bil["mean"] < bil["ci_high"] and bil["n"] == len(TASKS)
  claims = [(d["a"], d["b"], d["metric"]) for d in summary["differences"]]
  assert ("BiL-Pix2pix (5-shot)", "Pix2pix (5-shot)", "ssim") in claims
  assert ("BiL-Pix2pix (5-shot)", "BiL-Pix2pix w/o Aux (5-shot)", "psnr") in claims
  assert ("Pix2pix (5-shot)", "Pix2pix", "mse") in claims
  assert len(claims) == 9 and "lpips" not in {c[2] for c in claims}
  head = summary["differences"][0]
  assert head["ci_low"] > 0 and head["a_better"] == len(TASKS)
  md = report.run_markdown(summary)
  assert "| BiL-Pix2pix (5-shot) − Pix2pix (5-shot) | SSIM↑ | +0.0" in md
  assert "| Pix2pix | n/a | 0." in md and "8/8 tasks" in md
  psnr = [d for d in summary["differences"] if d["metric"] == "psnr"]
  assert all(d["relative_pct"] is None for d in psnr)


def test_report_pools_seeds_and_writes_markdown_and_json(tmp_path):
  dirs = [write(tmp_path, f"s{s}", fake_results(s)) for s in range(3)]
  out = tmp_path / "rep" / "seeds.md"
  proc = subprocess.run([sys.executable, "-m", "bil_jax.report", *dirs, f"--out={out}"],
                        cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout == out.read_text()
  summary = json.loads((tmp_path / "rep" / "seeds.json").read_text())
  assert summary["seeds"] == [0, 1, 2] and summary["num_test_tasks"] == len(TASKS)
  row = summary["rows"]["BiL-Pix2pix (5-shot)"]["ssim"]
  per_seed = [np.mean(fake_results(s)["per_task"]["BiL-Pix2pix (5-shot)"]["ssim"])
              for s in range(3)]
  assert row["mean"] == pytest.approx(np.mean(per_seed))
  assert row["std"] == pytest.approx(np.std(per_seed, ddof=1))
  head = summary["differences"][0]
  assert head["n"] == 3 * len(TASKS) and head["ci_low"] > 0
  assert [h["seed"] for h in summary["headline"]] == [0, 1, 2]
  assert all(h["relative_ssim_pct"] > 0 for h in summary["headline"])
  assert "± " in proc.stdout and "- seed 2: +" in proc.stdout


@pytest.mark.parametrize("bad, message", [
    (lambda r: r["config"]["data"].update(shots=1), "config differs from .* at data.shots"),
    (lambda r: r.pop("per_task"), "no per_task values"),
    (lambda r: r.update(seed=0), "seed 0 already in"),
    (lambda r: r.update(task_names=TASKS[::-1]), "test tasks or rows differ"),
])
def test_report_refuses_runs_that_do_not_pool_in_one_line(tmp_path, capsys, bad, message):
  good = write(tmp_path, "a", fake_results(0))
  r = fake_results(1)
  bad(r)
  wrong = write(tmp_path, "b", r)
  assert report.main([good, wrong]) == 1
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and err.startswith(f"error: {wrong}/eval/results.json: ")
  assert re.search(message, err)
  assert report.main([good, str(tmp_path / "missing")]) == 1
  assert "missing/eval/results.json: not found" in capsys.readouterr().err
