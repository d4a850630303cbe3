"""bil_jax.results and bil_jax.report on fabricated results.json files: one run, several
seeds, per condition, and files written before the new rows and keys; and on the protocol
runs' seeds stored under docs/runs/."""
import glob
import json
import os
import re
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from bil_jax import report, results, rows, stats, tuning

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_TASKS = 8
TASKS = [f"test_seen_{i:05d}" for i in range(NUM_TASKS // 2)
        ] + [f"test_unseen_{i:05d}" for i in range(NUM_TASKS // 2)]
CONDITIONS = ["seen"] * (NUM_TASKS // 2) + ["unseen"] * (NUM_TASKS // 2)
# Each row's SSIM above the task's base level (X (n-shot) = 0).
OFFSETS = {
    "x": -0.1, "x_nshot": 0.0, "xplus": -0.09, "xplus_nshot": 0.01, "bil_noaux": 0.01, "bil": 0.02,
    "bil_aux_random": 0.015, "bil_aux_merged": 0.018, "gp": -0.08, "lookup_label": -0.2,
    "lookup_pixel": -0.05, "nearest_shot": -0.15
}
OLD_ROWS = ("x", "x_nshot", "bil_noaux", "bil", "gp")


def fake_results(seed: int, row_ids=rows.ROW_IDS, new_keys: bool = True) -> dict:
  """A results.json dict as evaluate writes it (row_ids: the rows computed)."""
  rng = np.random.default_rng(seed)
  names = rows.row_names("pix2pix", 5)
  base = rng.uniform(0.3, 0.5, NUM_TASKS)
  per_task = {}
  for r in row_ids:
    ssim = base + OFFSETS[r] + rng.normal(0, 0.002, NUM_TASKS)
    per_task[names[r]] = {
        "ssim": ssim.tolist(), "mse": (0.1 - ssim / 10).tolist(), "psnr": (10 + 20 * ssim).tolist()
    }
  out = {
      "rows": {
          n: {"lpips": None, **{m: float(np.mean(v)) for m, v in r.items()}}
          for n, r in per_task.items()
      }, "per_task": per_task, "task_names": TASKS, "seed": seed,
      "row_ids": {r: names[r] for r in row_ids},
      "config": {"seed": seed, "data": {"shots": 5, "name": "synthetic"}}
  }
  if new_keys:
    out.update(task_conditions=CONDITIONS, strongest_baseline="xplus_nshot",
               pair_gradients={"pretrain": 5000, "meta": 22500, "xplus": 22500})
  return out


def write(tmp_path, name: str, result: dict) -> str:
  d = tmp_path / name / "eval"
  d.mkdir(parents=True)
  (d / "results.json").write_text(json.dumps(result))
  return str(tmp_path / name)


def pairs(cond: dict, metric: str = "ssim"):
  return [(d["a_id"], tuple(d["b_ids"])) for d in cond["differences"] if d["metric"] == metric]


def test_one_run_reports_every_condition_row_and_comparison():
  r = fake_results(0)
  summary = results.summarize([("r.json", r)], num_resamples=500)
  assert list(summary["conditions"]) == ["seen", "unseen", "all"]
  assert summary["metrics"] == ["ssim", "psnr"]  # no MSE (PSNR's measurement), no LPIPS
  for name, cond in summary["conditions"].items():
    assert cond["num_tasks"] == [NUM_TASKS if name == "all" else NUM_TASKS // 2]
    assert [v["id"] for v in cond["rows"].values()] == list(rows.ROW_IDS)
    got = pairs(cond)
    # The headline is BiL vs the strongest baseline (X+ here); it is not repeated.
    assert got[0] == ("bil", ("xplus_nshot",)) and got.count(got[0]) == 1
    assert ("x_nshot", ("x",)) in got and ("bil_aux_merged", ("bil",)) in got
    # Each n-shot row against the best lookup (label x pixel in the fixture).
    assert {a for a, b in got if b == ("lookup_pixel",)} == set(rows.NSHOT_ROWS)
    assert len(got) == 6 + len(rows.NSHOT_ROWS)
    for d in cond["differences"]:
      assert d["p_holm"] >= d["p"] and np.isnan(d["seed_ci_low"])
    bil = cond["rows"]["BiL-Pix2pix (5-shot)"]["ssim"]
    assert bil["ci_low"] < bil["mean"] < bil["ci_high"]
  md = report.markdown(summary)
  lines = md.splitlines()
  assert lines[0].startswith("Protocol: 1 seed(s)") and lines[1].startswith("p: ")
  assert "Holm" in lines[1] and "resampled" in lines[0]
  assert md.count("### ") == 3 and "### Unseen families (4 test tasks)" in md
  assert ("| headline: BiL vs the strongest baseline | BiL-Pix2pix (5-shot) − Pix2pix+ (5-shot)"
          " | SSIM↑ | +0.0") in md
  assert "MSE" not in md.split("\n", 2)[2] and "Seed-level" not in md


def test_files_without_the_new_rows_and_keys_still_report():
  r = fake_results(0, row_ids=OLD_ROWS, new_keys=False)
  summary = results.summarize([("r.json", r)], num_resamples=200)
  assert list(summary["conditions"]) == ["all"]
  got = pairs(summary["conditions"]["all"])
  # Without "strongest_baseline", X (n-shot) is the only n-shot baseline present.
  assert got == [("bil", ("x_nshot",)), ("bil", ("bil_noaux",)), ("x_nshot", ("x",))]
  both = fake_results(0, new_keys=False)
  assert ("bil", ("x_nshot",)) in pairs(
      results.summarize([("r", both)], num_resamples=200)["conditions"]["all"])
  assert results.strongest_baseline(both) is None  # two baselines, no choice recorded


def test_holm_is_applied_across_the_comparisons_of_a_metric():
  summary = results.summarize([("r.json", fake_results(1))], num_resamples=300)
  ssim = [d for d in summary["conditions"]["all"]["differences"] if d["metric"] == "ssim"]
  assert [d["p_holm"] for d in ssim] == stats.holm([d["p"] for d in ssim])


def test_report_pools_seeds_and_writes_markdown_and_json(tmp_path):
  dirs = [write(tmp_path, f"s{s}", fake_results(s)) for s in range(3)]
  out = tmp_path / "rep" / "seeds.md"
  proc = subprocess.run(
      [sys.executable, "-m", "bil_jax.report", *dirs, f"--out={out}", "--resamples=300"], cwd=ROOT,
      capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout == out.read_text()
  assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("warning: 3 seed(s)")
  summary = json.loads((tmp_path / "rep" / "seeds.json").read_text())
  assert summary["seeds"] == [0, 1, 2] and summary["num_resamples"] == 300
  row = summary["conditions"]["all"]["rows"]["BiL-Pix2pix (5-shot)"]["ssim"]
  per_seed = [
      np.mean(fake_results(s)["per_task"]["BiL-Pix2pix (5-shot)"]["ssim"]) for s in range(3)
  ]
  assert row["mean"] == pytest.approx(np.mean(per_seed))
  assert row["per_seed"] == pytest.approx(per_seed) and row["seeds"] == 3
  head = summary["conditions"]["all"]["differences"][0]
  assert head["n"] == 3 * NUM_TASKS and head["ci_low"] > 0
  assert head["seed_ci_low"] < head["mean"] < head["seed_ci_high"]
  assert [h["seed"] for h in summary["headline"]] == [0, 1, 2]
  assert all(h["relative_pct"] > 0 for h in summary["headline"])
  assert "Seed-level t 95%" in proc.stdout and "- seed 2: +" in proc.stdout
  assert "warning: 3 seed(s)" in proc.stdout


def test_strongest_baseline_may_differ_between_seeds():
  loaded = []
  for s in range(5):
    r = fake_results(s)
    r["strongest_baseline"] = "x_nshot" if s < 2 else "xplus_nshot"
    loaded.append((f"s{s}", r))
  summary = results.summarize(loaded, num_resamples=200)
  cond = summary["conditions"]["all"]
  head = cond["differences"][0]
  assert head["b_ids"] == ["x_nshot"] * 2 + ["xplus_nshot"] * 3
  assert head["b"] == "Pix2pix (5-shot) / Pix2pix+ (5-shot)"
  # The headline is its own comparison; both fixed-baseline comparisons follow it.
  assert ("bil", ("x_nshot",) * 5) in pairs(cond) and ("bil", ("xplus_nshot",) * 5) in pairs(cond)
  assert not report.seeds_warning(5) and report.seeds_warning(4).startswith("warning: 4 seed")


@pytest.mark.parametrize("bad, message", [
    (lambda r: r["config"]["data"].update(shots=1), "config differs from .* at data.shots"),
    (lambda r: r.pop("per_task"), "no per_task values"),
    (lambda r: r.update(seed=0), "seed 0 already in"),
    (lambda r: r["row_ids"].pop("gp"), "rows differ"),
    (lambda r: r.update(task_conditions=CONDITIONS[1:]), "task_conditions must give"),
    (lambda r: r.update(strongest_baseline="x"), "strongest_baseline 'x' is not an n-shot"),
    (lambda r: r["per_task"]["Pix2pix"]["ssim"].pop(), r"per_task\['Pix2pix'\]\['ssim'\] has 7"),
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


class _Writer:
  """Records what report.write_summaries writes (the clu MetricWriter calls it makes)."""

  def __init__(self):
    self.scalars, self.texts, self.hparams = {}, {}, {}

  def write_scalars(self, step, scalars):
    self.scalars.update(scalars)

  def write_texts(self, step, texts):
    self.texts.update(texts)

  def write_hparams(self, hparams):
    self.hparams.update(hparams)

  def flush(self):
    pass


def test_tensorboard_scalars_name_rows_differences_and_conditions():
  summary = results.summarize([("r.json", fake_results(0))], num_resamples=100)
  writer = _Writer()
  report.write_summaries(writer, ml_collections.ConfigDict({"seed": 0, "data": {"shots": 5}}),
                         summary, "the table")
  s = writer.scalars
  bil = summary["conditions"]["all"]["rows"]["BiL-Pix2pix (5-shot)"]["ssim"]
  assert s["bil/ssim"] == bil["mean"] and s["bil/ssim_ci_low"] == bil["ci_low"]
  assert "unseen/lookup_pixel/psnr" in s and "seen/bil/ssim_ci_high" in s
  assert "diff/bil-strongest_baseline/ssim" in s and "diff/bil-xplus_nshot/ssim" not in s
  assert "seen/diff/nearest_shot-best_lookup/ssim" not in s  # lookups are not n-shot rows
  assert "seen/diff/bil-best_lookup/psnr" in s and not any("mse" in k for k in s)
  assert writer.texts == {"results": "the table"} and writer.hparams["data.shots"] == 5


def _tuning(x_steps: int, x_lr: float) -> dict:
  """A "tuning" record on a 3 x 3 grid: X's choice given, X+ inside, BiL at the most steps."""
  chosen = {
      "x_nshot": {"is_lr": x_lr, "is_steps": x_steps,
                  "val_ssim": 0.5}, "xplus_nshot": {"is_lr": 0.01, "is_steps": 40, "val_ssim": 0.5},
      "bil": {"is_lr": 0.01, "is_steps": 80, "val_ssim": 0.6},
      "bil_aux_merged": {"is_lr": 0.01, "is_steps": 80, "val_ssim": 0.6, "follows": "bil"}
  }
  return {"grid": {"is_lr": [0.003, 0.01, 0.03], "is_steps": [20, 40, 80]}, "chosen": chosen}


def test_tuned_choices_on_an_edge_of_the_grid_are_named():
  found = tuning.edges(_tuning(80, 0.03))
  assert found == {
      "x_nshot": [("most steps", 80), ("highest lr", 0.03)], "bil": [("most steps", 80)]
  }
  low = tuning.edges(_tuning(20, 0.003))["x_nshot"]
  assert low == [("fewest steps", 20), ("lowest lr", 0.003)]
  one_point = {"grid": {"is_lr": [0.01], "is_steps": [80]}, "chosen": _tuning(80, 0.01)["chosen"]}
  assert tuning.edges(one_point) == {}
  loaded = [(f"s{s}.json", dict(fake_results(s), tuning=_tuning(steps, 0.01)))
            for s, steps in ((0, 80), (1, 40))]
  summary = results.summarize(loaded, num_resamples=200)
  assert summary["tuning_edges"] == [{
      "row": "Pix2pix (5-shot)", "edge": "most steps", "value": 80, "seeds": [0]
  }, {"row": "BiL-Pix2pix (5-shot)", "edge": "most steps", "value": 80, "seeds": [0, 1]}]
  md = report.markdown(summary)
  assert ("note: tuned on an edge of the IS grid, which a wider grid might move (and raise that "
          "row's score): Pix2pix (5-shot), most steps (80) in 1/2 seed(s); BiL-Pix2pix "
          "(5-shot), most steps (80) in 2/2 seed(s)") in md
  assert "edge" not in report.markdown(
      results.summarize([("r.json", fake_results(0))], num_resamples=200))


def test_stored_protocol_seeds_still_load_and_pool():
  """docs/runs/*/seedS.json (results.json files of protocol runs whose seeds later sessions
  add) stay readable by the report, and each seed's row means pool as evaluate computed them
  when it wrote the file (its "summary")."""
  folders = sorted({
      os.path.dirname(p) for p in glob.glob(os.path.join(ROOT, "docs", "runs", "*", "seed*.json"))
  })
  assert folders, "no stored seeds under docs/runs"
  for folder in folders:
    loaded = results.load_results(sorted(glob.glob(os.path.join(folder, "seed*.json"))))
    summary = results.summarize(loaded, num_resamples=50)
    for f, r in loaded:
      assert os.path.basename(f) == f"seed{results.seed_of(r)}.json", f
    pooled = summary["conditions"]["all"]["rows"]
    for name in loaded[0][1]["summary"]["conditions"]["all"]["rows"]:
      own = [r["summary"]["conditions"]["all"]["rows"][name]["ssim"]["mean"] for _, r in loaded]
      assert pooled[name]["ssim"]["per_seed"] == pytest.approx(own), (folder, name)
