"""Test phase: ablation rows, table formatting, retrieval use, and the whole pipeline."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import jax
from bil_jax import (adapt, builders, config_lib, evaluate, gan, meta, metrics, parallel,
                     rows, streams, visualize)
from bil_jax.data import episodes, tasks

import tiny

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_row_names_follow_the_paper():
  names = rows.row_names("pix2pix", 5)
  assert [names[k] for k in evaluate.COMPUTED_ROWS] == [
      "Pix2pix", "Pix2pix (5-shot)", "BiL-Pix2pix w/o Aux (5-shot)", "BiL-Pix2pix (5-shot)",
      "BiL-Pix2pix (GP)"]
  assert list(names) == list(rows.ROW_IDS)
  assert rows.row_names("pg2", 1)["bil"] == "BiL-PG2 (1-shot)"


def test_rows_average_and_lpips_is_never_made_up():
  rows = evaluate._mean_rows({"A": [{"ssim": 0.5, "mse": 0.1, "psnr": 20.0},
                                    {"ssim": 0.7, "mse": 0.3, "psnr": 10.0}]})
  assert rows["A"] == {"lpips": None, "ssim": pytest.approx(0.6), "mse": pytest.approx(0.2),
                       "psnr": pytest.approx(15.0)}
  table = evaluate.markdown_table(rows)
  assert "| A | n/a | 0.600 | 0.200 | 15.000 |" in table
  with_lpips = evaluate._mean_rows({"B": [{"lpips": 0.25, "ssim": 1.0, "mse": 0.0, "psnr": 30.0}]})
  assert "| B | 0.250 |" in evaluate.markdown_table(with_lpips)


def test_retrieval_finds_the_task_with_the_same_layouts():
  rng = np.random.default_rng(0)
  maps = [rng.integers(0, 4, (3, 8, 8)).astype(np.uint8) for _ in range(6)]
  ts = tasks.from_tasks([(f"t{i}", m, np.zeros(m.shape + (3,), np.uint8))
                         for i, m in enumerate(maps)], 4)
  top = evaluate.retrieve_aux_tasks(maps[4][:2].astype(np.int32), ts, 3)
  assert top[0] == 4 and len(set(top.tolist())) == 3


def tiny_setup(augment_shots=False, num_test=2):
  """A config, TaskSets of 4x4 pairs (C=3 classes: 4 training tasks, ``num_test`` test
  tasks) and the tiny G/D spec for the test phase."""
  c = config_lib.base_config()
  c.data.shots, c.data.queries, c.data.eval_queries = 2, 2, 3
  c.data.augment.crop_fraction, c.data.augment.max_rotation_deg = 1.0, 0.0
  c.meta.update(estimator="first_order", inner_steps=1)
  c.meta.inner_optimizer = {"name": "sgd", "lr": 0.1}
  c.eval.update(is_steps=2, aux_steps=2, aux_tasks=2, aux_lr=0.05, augment_shots=augment_shots)
  rng = np.random.default_rng(0)

  def taskset(prefix, n):
    return tasks.from_tasks(
        [(f"{prefix}{i}", rng.integers(0, tiny.C, (6, tiny.H, tiny.W)),
          rng.integers(0, 256, (6, tiny.H, tiny.W, 3))) for i in range(n)], tiny.C)
  return c, taskset("train", 4), taskset("test", num_test), tiny.spec()


def test_shots_are_raw_pairs_unless_augment_shots_and_retrieval_uses_raw_maps():
  c, _, test_ts, _ = tiny_setup()
  raw = evaluate.test_episodes(c, test_ts)
  c.eval.augment_shots = True
  aug = evaluate.test_episodes(c, test_ts)
  images = test_ts.task_images(0).astype(np.float32) / 127.5 - 1
  for ep in raw:
    np.testing.assert_array_equal(ep["support"]["map"], ep["support_maps"])
    assert ep["query"]["image"].shape[0] == 3
  # Each raw shot is one of task 0's images, untouched.
  assert all(np.any(np.all(np.isclose(images, im), axis=(1, 2, 3)))
             for im in raw[0]["support"]["image"])
  # Same pairs either way: augment_shots changes the shots' pixels, not which pairs or the
  # maps retrieval sees.
  np.testing.assert_array_equal(aug[0]["support_maps"], raw[0]["support_maps"])
  assert not np.allclose(aug[0]["support"]["image"], raw[0]["support"]["image"])


def test_task_inputs_hold_the_retrieved_tasks_and_their_aux_meta_batches():
  """Retrieval by the raw support maps; Aux meta-batches and keys from test task t's streams."""
  c, train_ts, test_ts, _ = tiny_setup()
  ep = evaluate.test_episodes(c, test_ts)[1]
  sampler = episodes.Sampler.from_config(c.data)
  task = evaluate.task_inputs(c, sampler, train_ts, ep, 1)
  aux = evaluate.retrieve_aux_tasks(ep["support_maps"], train_ts, 2)
  np.testing.assert_array_equal(task["aux_tasks"], aux)
  assert task["aux_rngs"].shape == (2, 2, 2) and task["aux"]["support"]["image"].shape[:2] == (2, 2)
  for step in range(2):
    want = sampler.meta_batch(train_ts, 2, streams.episode_rng(c.seed, "aux",
                                                                streams.aux_step(1, step)),
                              task_indices=list(aux))
    jax.tree.map(np.testing.assert_array_equal,
                 jax.tree.map(lambda x: x[step], task["aux"]), want)  # pylint: disable=cell-var-from-loop
    np.testing.assert_array_equal(
        task["aux_rngs"][step], meta.task_rngs(streams.key(c.seed, "aux", 1), step, 2))
  np.testing.assert_array_equal(task["rng"], streams.key(c.seed, "eval", 1))
  c.eval.aux_steps = 0
  assert evaluate.task_inputs(c, sampler, train_ts, ep, 1)["aux_rngs"].shape == (0, 2, 2)


def test_padded_positions_repeat_the_last_task():
  assert evaluate.padded_positions(3, 4).tolist() == [0, 1, 2, 2]
  assert evaluate.padded_positions(5, 2).tolist() == [0, 1, 2, 3, 4, 4]
  assert evaluate.padded_positions(4, 4).tolist() == [0, 1, 2, 3]
  assert evaluate.padded_positions(2, 1).tolist() == [0, 1]


def test_rows_equal_the_per_task_loop_and_aux_changes_the_gp_before_is_adaptation():
  """task_outputs (Aux meta-steps under lax.scan, adaptations under lax.map) equals the
  step-by-step computation: Aux meta-steps of bil_jax.meta on one device, then each row."""
  c, train_ts, test_ts, spec = tiny_setup()
  x_params, gp_params = tiny.init_params(spec, 0), tiny.init_params(spec, 1)
  progs = evaluate._Programs(c, spec)
  ep = evaluate.test_episodes(c, test_ts)[0]
  sampler = episodes.Sampler.from_config(c.data)
  task = evaluate.task_inputs(c, sampler, train_ts, ep, 0)
  out = jax.jit(progs.task_outputs)(x_params, gp_params, {"frozen": None, "lpips": None}, task)

  aux_opt = builders.aux_optimizer(c)
  aux_step = meta.make_meta_step(builders.inner_loop(c, spec), c.meta.estimator, aux_opt,
                                 parallel.make_mesh(jax.devices()[:1]))
  tuned, opt_state = gp_params, aux_opt.init(gp_params)
  for step in range(c.eval.aux_steps):
    batch = sampler.meta_batch(train_ts, 2, streams.episode_rng(c.seed, "aux",
                                                                 streams.aux_step(0, step)),
                               task_indices=list(task["aux_tasks"]))
    rngs = meta.task_rngs(streams.key(c.seed, "aux", 0), step, 2)
    tuned, opt_state, _ = aux_step(tuned, opt_state, batch, rngs, None)
  leaves = lambda p: jax.tree.leaves(p)  # pylint: disable=unnecessary-lambda-assignment
  assert not all(np.allclose(a, b) for a, b in zip(leaves(tuned), leaves(gp_params)))

  loop = builders.inner_loop(c, spec, steps=2)
  rng = jax.random.fold_in(jax.random.PRNGKey(c.seed), 2_000_000)
  q = ep["query"]
  direct = {
      "x": gan.generate(spec, x_params["G"], q, rng, train=False),
      "x_nshot": adapt.adapt_and_generate(loop, x_params, ep["support"], q, rng)[0],
      "bil_noaux": adapt.adapt_and_generate(loop, gp_params, ep["support"], q, rng)[0],
      # BiL's IS adaptation starts from the Aux-tuned GP, not from the GP itself.
      "bil": adapt.adapt_and_generate(loop, tuned, ep["support"], q, rng)[0],
      "gp": gan.generate(spec, gp_params["G"], q, rng, train=False),
  }
  assert out["grid"].shape == (5, 2, tiny.H, tiny.W, 3)
  for r, key in enumerate(evaluate.COMPUTED_ROWS):
    np.testing.assert_allclose(out["grid"][r], direct[key][:2], atol=1e-5, err_msg=key)
    for m, want in metrics.image_metrics(direct[key], q["image"]).items():
      np.testing.assert_allclose(out["scores"][m][r], want, rtol=1e-5, atol=1e-5, err_msg=key)
  grid = dict(zip(evaluate.COMPUTED_ROWS, out["grid"]))
  for a, b in (("x", "gp"), ("x", "x_nshot"), ("bil", "bil_noaux")):
    assert not np.allclose(grid[a], grid[b], atol=1e-4), (a, b)


def test_evaluate_writes_per_task_results_tables_tensorboard_and_grid(tmp_path, monkeypatch):
  """evaluate() on the tiny models (checkpoints and data stubbed): every output is written."""
  c, train_ts, test_ts, spec = tiny_setup()
  c.eval.grid_tasks = 1
  params = {"pretrain": tiny.init_params(spec, 0), "meta": tiny.init_params(spec, 1)}
  monkeypatch.setattr(evaluate.loading, "load_data",
                      lambda *_: evaluate.loading.Splits(train_ts, None, test_ts))
  monkeypatch.setattr(evaluate.builders, "build_spec", lambda *_: spec)
  monkeypatch.setattr(evaluate.builders, "load_frozen", lambda *_: None)
  monkeypatch.setattr(evaluate, "load_params", lambda _, phase: params[phase])
  rows = evaluate.evaluate(c, str(tmp_path))
  out = tmp_path / "eval"
  result = json.loads((out / "results.json").read_text())
  assert result["task_names"] == ["test0", "test1"] and result["rows"] == rows
  for name, values in result["per_task"].items():
    assert rows[name]["psnr"] == pytest.approx(np.mean(values["psnr"]))
  assert result["row_ids"]["bil"] == "BiL-Pix2pix (2-shot)"
  assert len(result["summary"]["differences"]) == 9
  table = (out / "results.md").read_text()
  assert "Wilcoxon" in table and "| BiL-Pix2pix (2-shot) − Pix2pix (2-shot) | SSIM↑ |" in table
  assert len([l for l in table.splitlines() if l.startswith("| ") and " − " in l]) == 9
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(out))
  png = np.asarray(Image.open(out / "samples.png"))
  assert png.shape[1] == 7 * (96 + 4) + 4  # map, target and the five rows, 4x4 -> 96 px


def test_sample_grid_is_enlarged_and_headed():
  cols = [np.zeros((2, 32, 32, 3), np.float32)] * 3
  img = visualize.labeled_grid(cols, ["map", "target", "BiL-Pix2pix w/o Aux (5-shot)"])
  body_h = 2 * (96 + 2) + 2
  assert img.dtype == np.uint8 and img.shape[1] == 3 * (96 + 2) + 2 and img.shape[0] > body_h
  header = img[:img.shape[0] - body_h]
  assert (header < 128).any()  # dark header text on white
  np.testing.assert_array_equal(visualize.upscale(np.arange(4.).reshape(1, 2, 2, 1), 5)[0, :, :, 0],
                                np.repeat(np.repeat(np.arange(4.).reshape(2, 2), 3, 0), 3, 1))


def test_pipeline_runs_end_to_end_and_writes_all_outputs(tmp_path):
  """--mode=all (pretrain, metatrain, evaluate) on a tiny config writes JSON, Markdown and PNG."""
  proc = subprocess.run(
      [sys.executable, "-m", "bil_jax.main",
       f"--config={ROOT}/configs/faces.py:pg2,smoke", f"--workdir={tmp_path}",
       # Second-order meta-gradients are tested in test_estimators/test_parallel/
       # test_reliability; compiling PG2's would take most of this test's time.
       "--config.meta.estimator=first_order",
       # One down-sampling level instead of the 3 derived for 32x32 (stem, encoder,
       # bottleneck, decoder with skip, head: every PG2 block is still there): compiling
       # the six programs of the pipeline takes about a third of the time (a PG2 GAN step:
       # 26 s instead of 92 s of CPU). Deeper PG2s are tested in test_models.
       "--config.model.num_downs=1"],
      cwd=ROOT, capture_output=True, text=True, timeout=1800)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = tmp_path / "eval"
  result = json.loads((out / "results.json").read_text())
  assert len(result["rows"]) == 5
  for row in result["rows"].values():
    assert row["lpips"] is None
    assert 0.0 <= row["mse"] <= 4.0 and -1.0 <= row["ssim"] <= 1.0 and np.isfinite(row["psnr"])
  assert result["config"]["data"]["name"] == "synthetic"
  assert all(len(r["aux_tasks"]) == result["config"]["eval"]["aux_tasks"]
             for r in result["aux_retrieval"])
  n = result["num_test_tasks"]
  assert len(result["task_names"]) == n and set(result["per_task"]) == set(result["rows"])
  for name, row in result["rows"].items():
    assert set(result["per_task"][name]) == {"ssim", "mse", "psnr"}
    assert all(len(v) == n for v in result["per_task"][name].values())
    assert row["ssim"] == pytest.approx(np.mean(result["per_task"][name]["ssim"]))
  table = (out / "results.md").read_text()
  differences = [l for l in table.splitlines() if l.startswith("| ") and " − " in l]
  assert "n/a" in table and len(differences) == 9 and "Wilcoxon" in table
  ids = result["row_ids"]
  assert f"| {ids['bil']} − {ids['x_nshot']} | SSIM↑ |" in table
  assert (out / "samples.png").stat().st_size > 0
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(out))
