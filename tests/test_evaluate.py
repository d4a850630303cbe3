"""Test phase: ablation rows, table formatting, retrieval use, and the whole pipeline."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import jax
import jax.numpy as jnp
from bil_jax import (adapt, builders, config_lib, eval_inputs, eval_programs, eval_store, evaluate,
                     gan, lookups, meta, metrics, parallel, rows, streams, tuning, visualize)
from bil_jax.data import episodes, tasks

import tiny

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_row_names_follow_the_paper():
  names = rows.row_names("pix2pix", 5)
  assert [names[k] for k in ("x", "x_nshot", "bil_noaux", "bil", "gp")] == [
      "Pix2pix", "Pix2pix (5-shot)", "BiL-Pix2pix w/o Aux (5-shot)", "BiL-Pix2pix (5-shot)",
      "BiL-Pix2pix (GP)"
  ]
  assert evaluate.ROW_IDS == rows.ROW_IDS
  assert list(names) == list(rows.ROW_IDS)
  assert rows.row_names("pg2", 1)["bil"] == "BiL-PG2 (1-shot)"


def test_rows_average_and_lpips_is_never_made_up():
  rows = evaluate._mean_rows(
      {"A": [{"ssim": 0.5, "mse": 0.1, "psnr": 20.0}, {"ssim": 0.7, "mse": 0.3, "psnr": 10.0}]})
  assert rows["A"] == {
      "lpips": None, "ssim": pytest.approx(0.6), "mse": pytest.approx(0.2),
      "psnr": pytest.approx(15.0)
  }
  with_lpips = evaluate._mean_rows({"B": [{"lpips": 0.25, "ssim": 1.0, "mse": 0.0, "psnr": 30.0}]})
  assert with_lpips["B"]["lpips"] == 0.25


def test_retrieval_finds_the_task_with_the_same_layouts():
  rng = np.random.default_rng(0)
  maps = [rng.integers(0, 4, (3, 8, 8)).astype(np.uint8) for _ in range(6)]
  ts = tasks.from_tasks(
      [(f"t{i}", m, np.zeros(m.shape + (3,), np.uint8)) for i, m in enumerate(maps)], 4)
  top = eval_inputs.retrieve_aux_tasks(maps[4][:2].astype(np.int32), ts, 3)
  assert top[0] == 4 and len(set(top.tolist())) == 3


def tiny_setup(augment_shots=False, num_test=2):
  """A config, TaskSets of 4x4 pairs (C=3 classes: 4 training tasks, ``num_test`` test
  tasks) and the tiny G/D spec for the test phase. Tuning grid: 2 lrs x 2 step counts."""
  c = config_lib.base_config()
  c.data.shots, c.data.queries, c.data.eval_queries = 2, 2, 3
  c.data.augment.crop_fraction, c.data.augment.max_rotation_deg = 1.0, 0.0
  c.meta.update(estimator="first_order", inner_steps=1)
  c.meta.inner_optimizer = {"name": "sgd", "lr": 0.1}
  c.eval.update(is_steps=2, aux_steps=2, aux_tasks=2, aux_lr=0.05, augment_shots=augment_shots,
                tune_is_lrs=(0.1, 0.3), tune_is_steps=(2, 1), num_val_tasks=2)
  rng = np.random.default_rng(0)
  return c, tiny_taskset(rng, "train", 4), tiny_taskset(rng, "test", num_test), tiny.spec()


def tiny_taskset(rng, prefix, n):
  """n tasks of 6 random 4x4 pairs named prefix0, prefix1, ..."""
  return tasks.from_tasks([(f"{prefix}{i}", rng.integers(
      0, tiny.C, (6, tiny.H, tiny.W)), rng.integers(0, 256, (6, tiny.H, tiny.W, 3)))
                           for i in range(n)], tiny.C)


def tiny_stubs(train_ts, test_ts, spec):
  """(module, attribute, value) triples that make evaluate() run on the tiny set-up: the
  data (2 validation tasks 'val0', 'val1'), the spec, no frozen weights, and tiny
  parameters for the pretrain, xplus and meta checkpoints."""
  val_ts = tiny_taskset(np.random.default_rng(1), "val", 2)
  params = {
      "pretrain": tiny.init_params(spec, 0), "xplus": tiny.init_params(spec, 2),
      "meta": tiny.init_params(spec, 1)
  }
  splits = evaluate.loading.Splits(train_ts, val_ts, test_ts)
  return [(evaluate.loading, "load_data", lambda *_: splits),
          (evaluate.builders, "build_spec", lambda *_: spec),
          (evaluate.builders, "load_frozen", lambda *_: None),
          (evaluate.checkpoint, "phase_params", lambda _, phase: params[phase])]


def test_shots_are_raw_pairs_unless_augment_shots_and_retrieval_uses_raw_maps():
  c, _, test_ts, _ = tiny_setup()
  raw = eval_inputs.test_episodes(c, test_ts)
  c.eval.augment_shots = True
  aug = eval_inputs.test_episodes(c, test_ts)
  images = test_ts.task_images(0).astype(np.float32) / 127.5 - 1
  for ep in raw:
    np.testing.assert_array_equal(ep["support"]["map"], ep["support_maps"])
    assert ep["query"]["image"].shape[0] == 3
  # Each raw shot is one of task 0's images, untouched.
  assert all(
      np.any(np.all(np.isclose(images, im), axis=(1, 2, 3))) for im in raw[0]["support"]["image"])
  # Same pairs either way: augment_shots changes the shots' pixels, not which pairs or the
  # maps retrieval sees.
  np.testing.assert_array_equal(aug[0]["support_maps"], raw[0]["support_maps"])
  assert not np.allclose(aug[0]["support"]["image"], raw[0]["support"]["image"])


def test_task_inputs_hold_the_retrieved_tasks_and_their_aux_meta_batches():
  """Retrieval by the raw support maps; Aux meta-batches and keys from test task t's streams."""
  c, train_ts, test_ts, _ = tiny_setup()
  ep = eval_inputs.test_episodes(c, test_ts)[1]
  sampler = episodes.Sampler.from_config(c.data)
  task = eval_inputs.task_inputs(c, sampler, train_ts, ep, 1)
  aux = eval_inputs.retrieve_aux_tasks(ep["support_maps"], train_ts, 2)
  np.testing.assert_array_equal(task["aux_tasks"], aux)
  assert task["aux_rngs"].shape == (2, 2, 2) and task["aux"]["support"]["image"].shape[:2] == (2, 2)
  for step in range(2):
    want = sampler.meta_batch(train_ts, 2,
                              streams.episode_rng(c.seed, "aux", streams.aux_step(1, step)),
                              task_indices=list(aux))
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(lambda x: x[step], task["aux"]), want)  # pylint: disable=cell-var-from-loop
    np.testing.assert_array_equal(task["aux_rngs"][step],
                                  meta.task_rngs(streams.key(c.seed, "aux", 1), step, 2))
  np.testing.assert_array_equal(task["rng"], streams.key(c.seed, "eval", 1))
  c.eval.aux_steps = 0
  assert eval_inputs.task_inputs(c, sampler, train_ts, ep, 1)["aux_rngs"].shape == (0, 2, 2)


def test_padded_positions_repeat_the_last_task():
  assert eval_inputs.padded_positions(3, 4).tolist() == [0, 1, 2, 2]
  assert eval_inputs.padded_positions(5, 2).tolist() == [0, 1, 2, 3, 4, 4]
  assert eval_inputs.padded_positions(4, 4).tolist() == [0, 1, 2, 3]
  assert eval_inputs.padded_positions(2, 1).tolist() == [0, 1]


SETTINGS = {
    "x_nshot": (0.1, 2), "xplus_nshot": (0.3, 1), "bil_noaux": (0.1, 1), "bil": (0.3, 2),
    "bil_aux_random": (0.3, 2), "bil_aux_merged": (0.3, 2)
}


def _aux_tuned(c, aux_step, aux_opt, gp_params, train_ts, sampler, aux_tasks, t=0):
  """The GP after Aux meta-steps (``aux_step``, a bil_jax.meta step on one device) on
  tasks ``aux_tasks``."""
  tuned, opt_state = gp_params, aux_opt.init(gp_params)
  for step in range(c.eval.aux_steps):
    batch = sampler.meta_batch(train_ts, 2,
                               streams.episode_rng(c.seed, "aux", streams.aux_step(t, step)),
                               task_indices=list(aux_tasks))
    rngs = meta.task_rngs(streams.key(c.seed, "aux", t), step, 2)
    tuned, opt_state, _ = aux_step(tuned, opt_state, batch, rngs, None)
  return tuned


def test_rows_equal_the_per_task_loop_and_aux_changes_the_gp_before_is_adaptation():
  """task_outputs (Aux meta-steps under lax.scan, adaptations under lax.map, each row at
  its own lr and steps) equals the step-by-step computation: Aux meta-steps of
  bil_jax.meta on one device, then each row; the lookups are bil_jax.lookups'."""
  c, train_ts, test_ts, spec = tiny_setup()
  params = {
      "x": tiny.init_params(spec, 0), "xplus": tiny.init_params(spec, 2),
      "gp": tiny.init_params(spec, 1)
  }
  progs = eval_programs.Programs(c, spec)
  ep = eval_inputs.test_episodes(c, test_ts)[0]
  sampler = episodes.Sampler.from_config(c.data)
  task = eval_inputs.task_inputs(c, sampler, train_ts, ep, 0)
  settings = eval_programs.settings_inputs(progs.grid, SETTINGS)
  run = jax.jit(progs.task_outputs)
  out = run(params, {"frozen": None, "lpips": None, "settings": settings}, task)
  # The settings are data: other ones reuse the compiled program.
  other = eval_programs.settings_inputs(progs.grid, {r: (0.1, 1) for r in SETTINGS})
  other_out = run(params, {"frozen": None, "lpips": None, "settings": other}, task)
  assert run._cache_size() == 1  # pylint: disable=protected-access
  assert not np.allclose(other_out["grid"], out["grid"])
  # The compiled path: the Aux program first, its starts passed on to the rows' program.
  consts = {"frozen": None, "lpips": None, "settings": settings}
  one_device = eval_programs.Programs(c, spec, parallel.make_mesh(jax.devices()[:1]))
  sharded = one_device.run(params, consts, eval_inputs.stack_tasks([task]))
  np.testing.assert_allclose(np.asarray(sharded["grid"][0]), out["grid"], atol=1e-6)
  with pytest.raises(ValueError, match="row 'bil'.*step counts \\(1, 2\\)"):
    eval_programs.settings_inputs(progs.grid, dict(SETTINGS, bil=(0.3, 3)))

  aux_opt = builders.aux_optimizer(c)
  aux_step = meta.make_meta_step(builders.inner_loop(c, spec), c.meta.estimator, aux_opt,
                                 parallel.make_mesh(jax.devices()[:1]))
  tuned = _aux_tuned(c, aux_step, aux_opt, params["gp"], train_ts, sampler, task["aux_tasks"])
  tuned_random = _aux_tuned(c, aux_step, aux_opt, params["gp"], train_ts, sampler,
                            eval_inputs.random_aux_tasks(c, train_ts, 0))
  leaves = lambda p: jax.tree.leaves(p)  # pylint: disable=unnecessary-lambda-assignment
  assert not all(np.allclose(a, b) for a, b in zip(leaves(tuned), leaves(params["gp"])))
  assert not all(np.allclose(a, b) for a, b in zip(leaves(tuned), leaves(tuned_random)))

  rng = jax.random.fold_in(jax.random.PRNGKey(c.seed), 2_000_000)
  q = ep["query"]

  def adapted(row, p, support=ep["support"]):
    lr, steps = SETTINGS[row]
    c2 = c.copy_and_resolve_references()
    c2.meta.inner_optimizer.lr = lr
    return adapt.adapt_and_generate(builders.inner_loop(c2, spec, steps=steps), p, support, q,
                                    rng)[0]

  merged = {k: np.concatenate([ep["support"][k], task["merged"][k]]) for k in ep["support"]}
  direct = {
      "x": gan.generate(spec, params["x"]["G"], q, rng, train=False),
      "x_nshot": adapted("x_nshot", params["x"]),
      "xplus": gan.generate(spec, params["xplus"]["G"], q, rng, train=False),
      "xplus_nshot": adapted("xplus_nshot", params["xplus"]),
      "bil_noaux": adapted("bil_noaux", params["gp"]),
      # BiL's IS adaptation starts from the Aux-tuned GP, not from the GP itself.
      "bil": adapted("bil", tuned),
      "bil_aux_random": adapted("bil_aux_random", tuned_random),
      "bil_aux_merged": adapted("bil_aux_merged", params["gp"], merged),
      "gp": gan.generate(spec, params["gp"]["G"], q, rng, train=False),
  }
  direct.update(
      zip(lookups.PREDICTORS, lookups.predict_all(ep["support_maps"], ep["support_images"],
                                                  q["map"])))
  assert task["merged"]["map"].shape == (2 * 2, tiny.H, tiny.W)  # K=2 tasks x n=2 pairs
  assert out["grid"].shape == (len(evaluate.ROW_IDS), 2, tiny.H, tiny.W, 3)
  for r, key in enumerate(evaluate.ROW_IDS):
    np.testing.assert_allclose(out["grid"][r], direct[key][:2], atol=1e-5, err_msg=key)
    for m, want in metrics.image_metrics(direct[key], q["image"]).items():
      np.testing.assert_allclose(out["scores"][m][r], want, rtol=1e-5, atol=1e-5, err_msg=key)
  grid = dict(zip(evaluate.ROW_IDS, out["grid"]))
  for a, b in (("x", "gp"), ("x", "x_nshot"), ("bil", "bil_noaux"), ("bil", "bil_aux_random"),
               ("bil_aux_merged", "bil_noaux"), ("x", "xplus")):
    assert not np.allclose(grid[a], grid[b], atol=1e-4), (a, b)


def test_adapt_at_scores_every_step_count_of_one_scan():
  """The images after s steps of one adapt_at scan equal an s-step adaptation's."""
  c, _, test_ts, spec = tiny_setup()
  ep = eval_inputs.test_episodes(c, test_ts)[0]
  params, rng = tiny.init_params(spec, 0), jax.random.PRNGKey(3)
  loop = builders.inner_loop(c, spec, steps=3, lr=0.2)
  fakes = adapt.adapt_at(loop, params, ep["support"], ep["query"], rng, None, (1, 3))
  for i, s in enumerate((1, 3)):
    want = adapt.adapt_and_generate(tiny.loop(spec, "sgd", lr=0.2, steps=s), params, ep["support"],
                                    ep["query"], rng)[0]
    np.testing.assert_allclose(fakes[i], want, atol=1e-6)
  # Stopping after the first count (a traced index, as in the test phase) keeps its images
  # bit for bit and leaves zeros after it; stopping after the last changes nothing.
  run = jax.jit(lambda last: adapt.adapt_at(loop, params, ep["support"], ep["query"], rng, None,
                                            (1, 3), last=last))
  whole = jax.jit(lambda: adapt.adapt_at(loop, params, ep["support"], ep["query"], rng, None,
                                         (1, 3)))()
  first, both = run(jnp.int32(0)), run(jnp.int32(1))
  np.testing.assert_array_equal(first[0], whole[0])
  assert not np.any(first[1]) and np.any(whole[1])
  np.testing.assert_array_equal(both, whole)


def test_tuning_picks_the_best_mean_validation_score_and_the_stronger_baseline():
  lrs, steps = (1e-3, 3e-3), (10, 20, 40)
  base = np.zeros((3, 2, 3))  # 3 validation tasks
  x = base.copy()
  x[:, 1, 0] = [0.5, 0.6, 0.7]  # best mean at lr 3e-3, 10 steps
  x[0, 0, 2] = 0.9  # one task's best is not the best mean
  xplus = base + 0.4  # flat: ties go to the first grid point
  chosen = tuning.choose({"x_nshot": x, "xplus_nshot": xplus, "bil": x.copy()}, lrs, steps)
  assert chosen["x_nshot"] == {"is_lr": 3e-3, "is_steps": 10, "val_ssim": pytest.approx(0.6)}
  assert (chosen["xplus_nshot"]["is_lr"], chosen["xplus_nshot"]["is_steps"]) == (1e-3, 10)
  assert chosen["bil_aux_merged"]["is_steps"] == 10 and chosen["bil_aux_random"]["follows"] == "bil"
  assert tuning.strongest_baseline(chosen) == "x_nshot"
  chosen["xplus_nshot"]["val_ssim"] = 0.7
  assert tuning.strongest_baseline(chosen) == "xplus_nshot"
  c = config_lib.base_config()
  c.eval.tune_is_lrs, c.eval.tune_is_steps = (), ()
  assert tuning.grid(c) == ((c.meta.inner_optimizer.lr,), (c.eval.is_steps,))
  c.eval.tune_is_steps = (0, 5)
  with pytest.raises(ValueError, match="eval.tune_is_steps"):
    tuning.grid(c)


@pytest.fixture(scope="module")
def tiny_results(tmp_path_factory):
  """evaluate() on the tiny models (checkpoints and data stubbed, 2 validation and 2 test
  tasks, a 2 x 2 tuning grid), the test split unreadable until tuning on validation has
  ended: (result, rows, out dir, read counts)."""
  c, train_ts, test_ts, spec = tiny_setup()
  c.eval.grid_tasks = 1
  mp = pytest.MonkeyPatch()
  state = {"tuned": False, "test_reads": 0}
  for module, name, value in tiny_stubs(train_ts, _AfterTuning(test_ts, state), spec):
    mp.setattr(module, name, value)
  tune = evaluate.tune_on_validation

  def tune_then_allow_test(*args, **kwargs):
    record = tune(*args, **kwargs)
    state["tuned"] = True
    return record

  mp.setattr(evaluate, "tune_on_validation", tune_then_allow_test)
  workdir = tmp_path_factory.mktemp("tiny_eval")
  try:
    means = evaluate.evaluate(c, str(workdir))
  finally:
    mp.undo()
  out = workdir / "eval"
  return json.loads((out / "results.json").read_text()), means, out, state


class _AfterTuning:
  """A TaskSet that fails any read before state['tuned'] and counts the reads after."""

  def __init__(self, tasks_, state):
    self._tasks, self._state = tasks_, state

  def __getattr__(self, name):
    assert self._state["tuned"], f"the test split was read ({name}) before tuning ended"
    self._state["test_reads"] += 1
    return getattr(self._tasks, name)


def test_evaluate_writes_every_row_per_task_results_and_grid(tiny_results):
  result, means, out, state = tiny_results
  assert state["test_reads"] > 0  # and none before tuning on validation ended
  assert result["task_names"] == ["test0", "test1"] and result["rows"] == means
  assert result["task_conditions"] == ["all", "all"]
  assert list(result["row_ids"]) == list(rows.ROW_IDS)
  assert result["row_ids"]["bil"] == "BiL-Pix2pix (2-shot)"
  for name in result["row_ids"].values():
    assert np.all(np.isfinite(result["per_task"][name]["ssim"])), name
    assert means[name]["psnr"] == pytest.approx(np.mean(result["per_task"][name]["psnr"]))
  assert all(len(r["aux_random_tasks"]) == 2 for r in result["aux_retrieval"])
  table = (out / "results.md").read_text()
  assert table.startswith("Protocol: 1 seed(s)") and "Holm" in table
  assert " | BiL-Pix2pix (2-shot) − Pix2pix (2-shot) | SSIM↑ |" in table
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(out))
  png = np.asarray(Image.open(out / "samples.png"))
  margin = png.shape[1] - ((2 + len(rows.ROW_IDS)) * (96 + 4) + 4)  # map, target, every row
  assert 0 < margin < 96 and (png[40:, :margin] < 128).any()  # the task names of the rows


def test_evaluate_records_tuning_on_validation_and_the_pair_gradients(tiny_results):
  result = tiny_results[0]
  tuned = result["tuning"]
  assert tuned["grid"] == {"is_lr": [0.1, 0.3], "is_steps": [1, 2]}
  assert tuned["val_tasks"] == ["val0", "val1"]
  for row in tuning.TUNED_ROWS:
    scores = np.asarray(tuned["val_ssim"][row])  # [lr, steps]
    li, si = np.unravel_index(np.argmax(scores), scores.shape)
    assert tuned["chosen"][row]["is_lr"] == tuned["grid"]["is_lr"][li]
    assert tuned["chosen"][row]["is_steps"] == tuned["grid"]["is_steps"][si]
    assert tuned["chosen"][row]["val_ssim"] == pytest.approx(scores.max())
  assert tuned["chosen"]["bil_aux_merged"]["is_lr"] == tuned["chosen"]["bil"]["is_lr"]
  baselines = {r: tuned["chosen"][r]["val_ssim"] for r in ("x_nshot", "xplus_nshot")}
  assert result["strongest_baseline"] == max(baselines, key=baselines.get)
  # 2 meta-steps... of the base config: pair-gradients from its counts.
  c = tiny_setup()[0]
  assert result["pair_gradients"]["meta"] == c.meta.steps * c.meta.meta_batch * (1 * 2 + 2)


class _Stop(Exception):
  """Stands for a kill right after a task's file was written."""


def test_an_interrupted_evaluation_resumes_with_the_same_results(tiny_results, tmp_path):
  """Killed after test task 0 was saved, a rerun computes only test task 1 (tuning read
  back) and writes the uninterrupted run's results; stored tasks of another config
  (eval.grid_tasks 2, which changes no program) are recomputed, not used."""
  c, train_ts, test_ts, spec = tiny_setup()
  c.eval.grid_tasks = 1
  computed, ran = [], []  # (phase, todo) of each resume's computation; run_tasks' todos
  resume, run_tasks, save = eval_store.resume, eval_programs.run_tasks, eval_store.TaskStore.save

  def counting_resume(store, num_tasks, compute, *args, **kwargs):

    def counted(todo):
      computed.append((os.path.basename(store.directory), list(todo)))
      return compute(todo)

    return resume(store, num_tasks, counted, *args, **kwargs)

  def counting_run_tasks(*args):
    ran.append([int(t) for t in args[-1]])
    return run_tasks(*args)

  def save_then_stop(self, t, outputs):
    save(self, t, outputs)
    if self.directory.endswith("test"):
      raise _Stop

  def run(config, stop):
    computed.clear()
    ran.clear()
    with pytest.MonkeyPatch.context() as mp:
      for module, name, value in tiny_stubs(train_ts, test_ts, spec):
        mp.setattr(module, name, value)
      mp.setattr(eval_programs, "run_tasks", counting_run_tasks)
      mp.setattr(eval_store, "resume", counting_resume)
      if stop:
        mp.setattr(eval_store.TaskStore, "save", save_then_stop)
        with pytest.raises(_Stop):
          evaluate.evaluate(config, str(tmp_path))
      else:
        evaluate.evaluate(config, str(tmp_path))
    assert ran == [todo for _, todo in computed]  # every task computed goes through the store
    return list(computed)

  other = config_lib.ml_collections.ConfigDict(c.to_dict())
  other.eval.grid_tasks = 2
  assert run(other, stop=True) == [("tuning", [0, 1]), ("test", [0, 1])]
  partial = tmp_path / "eval" / "partial"
  assert sorted(os.listdir(partial / "test")) == ["task_0000.npz"]
  # The stored tasks belong to another config: everything is computed again.
  assert run(c, stop=True) == [("tuning", [0, 1]), ("test", [0, 1])]
  assert run(c, stop=False) == [("test", [1])]
  assert not partial.exists()
  expected, _, expected_out, _ = tiny_results
  result = json.loads((tmp_path / "eval" / "results.json").read_text())
  for key in ("rows", "per_task", "tuning", "aux_retrieval", "strongest_baseline"):
    assert result[key] == expected[key], key
  np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "eval" / "samples.png")),
                                np.asarray(Image.open(expected_out / "samples.png")))


def test_task_store_round_trips_nested_outputs_and_ignores_other_fingerprints(tmp_path):
  outputs = {"scores": {"ssim": np.arange(6.).reshape(2, 3)}, "aux": np.int32([3, 1])}
  store = eval_store.TaskStore(str(tmp_path), eval_store.fingerprint({"a": 1}, outputs))
  store.save(2, outputs)
  (tmp_path / "task_0001.npz").write_bytes(b"truncated")
  (tmp_path / "task_0000.npz").write_bytes((tmp_path / "task_0002.npz").read_bytes()[:200])
  assert store.done(3) == [2]
  back = store.load(2)
  np.testing.assert_array_equal(back["scores"]["ssim"], outputs["scores"]["ssim"])
  assert back["aux"].dtype == np.int32
  for changed in ({"a": 2}, {**outputs, "aux": np.int32([3, 2])}):
    key = eval_store.fingerprint(*((changed, outputs) if "a" in changed else ({"a": 1}, changed)))
    assert key != store.fingerprint
    assert eval_store.TaskStore(str(tmp_path), key).done(3) == []


def test_sample_grid_is_enlarged_and_headed():
  cols = [np.zeros((2, 32, 32, 3), np.float32)] * 3
  img = visualize.labeled_grid(cols, ["map", "target", "BiL-Pix2pix w/o Aux (5-shot)"])
  body_h = 2 * (96 + 2) + 2
  assert img.dtype == np.uint8 and img.shape[1] == 3 * (96 + 2) + 2 and img.shape[0] > body_h
  header = img[:img.shape[0] - body_h]
  assert (header < 128).any()  # dark header text on white
  named = visualize.labeled_grid(cols, ["a", "b", "c"], row_labels=["task_1", "task_2"])
  margin = named.shape[1] - img.shape[1]
  assert margin > 0 and (named[-body_h:, :margin] < 128).any()
  with pytest.raises(ValueError, match="1 row labels for 2 rows"):
    visualize.labeled_grid(cols, ["a", "b", "c"], row_labels=["t"])
  np.testing.assert_array_equal(
      visualize.upscale(np.arange(4.).reshape(1, 2, 2, 1), 5)[0, :, :, 0],
      np.repeat(np.repeat(np.arange(4.).reshape(2, 2), 3, 0), 3, 1))


def test_pipeline_runs_end_to_end_and_writes_all_outputs(tmp_path):
  """--mode=all (pretrain, metatrain, evaluate) on a tiny config writes JSON, Markdown and PNG."""
  proc = subprocess.run(
      [
          sys.executable,
          "-m",
          "bil_jax.main",
          f"--config={ROOT}/configs/faces.py:pg2,smoke",
          f"--workdir={tmp_path}",
          # Second-order meta-gradients are tested in test_estimators/test_parallel/
          # test_reliability; compiling PG2's would take most of this test's time.
          "--config.meta.estimator=first_order",
          # One down-sampling level instead of the 3 derived for 32x32 (stem, encoder,
          # bottleneck, decoder with skip, head: every PG2 block is still there): compiling
          # the six programs of the pipeline takes about a third of the time (a PG2 GAN step:
          # 26 s instead of 92 s of CPU). Deeper PG2s are tested in test_models.
          "--config.model.num_downs=1"
      ],
      cwd=ROOT,
      capture_output=True,
      text=True,
      timeout=1800)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = tmp_path / "eval"
  result = json.loads((out / "results.json").read_text())
  assert len(result["rows"]) == len(rows.ROW_IDS)
  assert result["pair_gradients"]["xplus"] >= result["pair_gradients"]["meta"] > 0
  for row in result["rows"].values():
    assert row["lpips"] is None
    assert 0.0 <= row["mse"] <= 4.0 and -1.0 <= row["ssim"] <= 1.0 and np.isfinite(row["psnr"])
  assert result["config"]["data"]["name"] == "synthetic"
  assert all(
      len(r["aux_tasks"]) == result["config"]["eval"]["aux_tasks"] for r in result["aux_retrieval"])
  n = result["num_test_tasks"]
  assert len(result["task_names"]) == n and set(result["per_task"]) == set(result["rows"])
  for name, row in result["rows"].items():
    assert set(result["per_task"][name]) == {"ssim", "mse", "psnr"}
    assert all(len(v) == n for v in result["per_task"][name].values())
    assert row["ssim"] == pytest.approx(np.mean(result["per_task"][name]["ssim"]))
  table = (out / "results.md").read_text()
  differences = [l for l in table.splitlines() if l.startswith("| ") and " − " in l]
  # Every comparison of rows.COMPARISONS, SSIM and PSNR (the headline's baseline once: its
  # own comparison with BiL is not repeated).
  roles, every_role = {l.split(" | ")[0][2:] for l in differences
                      }, {c.role for c in rows.COMPARISONS}
  assert roles <= every_role and len(every_role - roles) <= 1
  assert len(differences) >= 2 * (len(rows.COMPARISONS) - 1) and "Holm" in table
  ids = result["row_ids"]
  assert f" | {ids['bil']} − {ids['x_nshot']} | SSIM↑ |" in table
  assert (out / "samples.png").stat().st_size > 0
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(out))
