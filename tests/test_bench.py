"""The estimator benchmark (cost, fidelity, outcome) on tiny models (tests/tiny.py)."""
import functools
import json
import os

import jax
import numpy as np
import pytest

import tiny
from bil_jax import config_lib
from bil_jax.bench import (common, cost, fidelity, options, outcome, presets, report, sweep, worker)
from bil_jax.bench.common import EstimatorSpec


def _tiny_config(**meta):
  c = config_lib.base_config()
  c.data.image_height = c.data.image_width = tiny.H
  c.data.num_classes = tiny.C
  c.data.shots = c.data.queries = 2
  c.loss.lambda_b = 0.0
  c.meta.inner_optimizer = {"name": "sgd", "lr": 0.1, "clip": 0.0, "schedule": {"name": ""}}
  for k, v in meta.items():
    c.meta[k] = v
  return c


def _tiny_setup(config, estimator="second_order"):
  sp = tiny.spec()
  return cost.make_setup(config, estimator, spec=sp, params=tiny.init_params(sp), model_name="tiny")


def test_estimators_flag_binds_options_to_the_estimator_before_them():
  specs = common.parse_estimators(
      "second_order,truncated:backprop_steps=2,es:pairs=16,sigma=0.02,reptile")
  assert [s.label for s in specs
         ] == ["second_order", "truncated(backprop_steps=2)", "es(pairs=16,sigma=0.02)", "reptile"]
  assert not specs[3].backprops_unroll and specs[1].backprops_unroll
  (user,) = common.parse_estimators("bil_jax.estimators.first_order:first_order")
  assert user.name == "bil_jax.estimators.first_order:first_order" and not user.options
  for bad, says in (("es:nope=1", "nope"), ("pairs=2", "before any estimator"), ("bogus", "bogus"),
                    ("reptile,reptile", "twice")):
    with pytest.raises(ValueError, match=says):
      common.parse_estimators(bad)


def test_compare_measures_cosine_relative_error_and_norm_ratio():
  ref = np.array([[1.0, 0.0], [0.0, 2.0]], np.float32)
  g = np.array([[2.0, 0.0], [0.0, -2.0]], np.float32)
  c = jax.device_get(fidelity.compare(g, ref))
  np.testing.assert_allclose(c["cosine"], [1.0, -1.0])
  np.testing.assert_allclose(c["rel_error"], [1.0, 2.0])
  np.testing.assert_allclose(c["norm_ratio"], [2.0, 1.0])


def test_cost_and_fidelity_on_a_tiny_model(tmp_path):
  """Every record key; remat keeps the loss; truncated with T = K is second_order exactly
  (cosine 1, error 0); first_order and reptile get cosines in [-1, 1] with a spread."""
  config = _tiny_config(inner_steps=2, meta_batch=2)
  setup = _tiny_setup(config)
  opts = options.make(estimators="second_order,first_order,reptile,truncated:backprop_steps=2",
                      remat="none,step", inner_steps="2", meta_batch="1", repeats=1,
                      peak_size="small", fidelity_seeds=2)
  result = sweep.run(config, opts, str(tmp_path), log=lambda *_: None, setup=setup)

  loaded = json.load(open(os.path.join(tmp_path, "bench.json")))
  assert set(loaded) >= {"cost", "fidelity", "outcome", "peaks", "notes", "config"}
  recs = loaded["cost"]
  # second_order and truncated under both remat modes; first_order and reptile once.
  assert len(recs) == len(result["cost"]) == 6
  for r in recs:
    for key in sweep.RECORD_KEYS:
      assert key in r, key
    assert r["peak_memory_bytes"] > 0 and r["flops"] > 0 and r["step_time_s"] > 0
  by = {(r["estimator"], r["remat"]): r for r in recs}
  np.testing.assert_allclose(by[("second_order", "none")]["loss"],
                             by[("second_order", "step")]["loss"], rtol=1e-6)

  summary = {(r["estimator"], r["net"]): r for r in loaded["fidelity"]["summary"]}
  for net in ("G", "D"):
    for exact in ("second_order", "truncated(backprop_steps=2)"):
      assert summary[(exact, net)]["cosine_mean"] == pytest.approx(1.0, abs=1e-5)
      assert summary[(exact, net)]["rel_error_mean"] == pytest.approx(0.0, abs=1e-4)
    for est in ("first_order", "reptile"):
      r = summary[(est, net)]
      assert -1.0 <= r["cosine_min"] <= r["cosine_mean"] <= 1.0
      assert r["num_tasks"] == 4 and r["num_seeds"] == 2 and r["cosine_std"] >= 0
  assert summary[("first_order", "G")]["cosine_mean"] < 1 - 1e-4
  md = open(os.path.join(tmp_path, "bench.md")).read()
  assert "## Gradient fidelity" in md and "| reptile | D |" in md
  for png in ("bench.png", "fidelity.png"):
    assert os.path.getsize(os.path.join(tmp_path, png)) > 0


def test_flops_are_linear_in_k_from_unrolled_lowerings():
  config = _tiny_config()
  setup = _tiny_setup(config)
  args = (setup.params, setup.opt_state, common.random_tasks(config, 1),
          cost.meta.task_rngs(jax.random.PRNGKey(0), 0, 1), None)
  est = EstimatorSpec("second_order")
  f1, f2, f3 = (cost.step_flops(setup, est, k, "none", args) for k in (1, 2, 3))
  assert 0 < f1 < f2 < f3 and f3 - f2 == pytest.approx(f2 - f1)


def test_presets_are_config_overrides_that_command_line_keys_win():
  config = config_lib.base_config()
  opts = presets.apply_preset(config, "torch_ref_32", {"repeats": 3}, user_keys={"model.ngf"})
  assert (config.data.image_height, config.model.ndf, config.model.ngf) == (32, 16, 16)
  assert config.meta.inner_optimizer.name == "sgd" and config.loss.lambda_b == 0.0
  assert opts.inner_steps == "5" and opts.repeats == 3 and opts.fidelity is False
  config.model.ngf = 7
  presets.apply_preset(config, "torch_ref_64", {}, user_keys={"model.ngf"})
  assert (config.data.image_height, config.model.ngf) == (64, 7)
  s = sweep.parse(config, options.make(remat="on,nested"))
  assert s.remat == ["step", "nested"] and s.inner_steps == [config.meta.inner_steps]
  with pytest.raises(ValueError, match="--remat"):
    sweep.parse(config, options.make(remat="sometimes"))
  with pytest.raises(ValueError, match="unknown bench options"):
    options.make(remats="none")


def test_config_survives_the_trip_to_a_worker_process(tmp_path):
  config = _tiny_config(inner_steps=3)
  back = common.config_from_json(common.config_to_json(config))
  assert back.to_dict() == config.to_dict()
  with pytest.raises(AttributeError):
    back.new_key = 1  # locked, as bil_jax.main's configs are
  # A failing job comes back as a one-line error from the fresh process.
  job = {
      "kind": "cost", "config": common.config_to_json(config), "inner_steps": 1, "meta_batch": 1,
      "remat": "none", "peaks": {}, "estimator": {"name": "es", "options": "nope=1"}
  }
  r = worker.run_in_process(job, str(tmp_path), log=lambda *_: None)
  assert "nope=1" in r["error"] and "\n" not in r["error"]


def test_random_perceptual_weights_when_none_are_given(tmp_path):
  """lambda_b > 0 with no loss.vgg_weights: a random LPIPS-VGG file both kinds can read."""
  from bil_jax import builders  # pylint: disable=import-outside-toplevel
  config = config_lib.base_config()
  assert config.loss.lambda_b > 0 and not config.loss.vgg_weights
  msg = common.ensure_perceptual_weights(config, str(tmp_path))
  assert "randomly initialised" in msg and os.path.isfile(config.loss.vgg_weights)
  assert builders.load_frozen(config) is not None
  config.loss.perceptual = "vgg_mse"
  assert builders.load_frozen(config) is not None
  assert common.ensure_perceptual_weights(config, str(tmp_path)) == ""


def test_outcome_runs_each_estimator_for_equal_steps_and_equal_time(tmp_path, monkeypatch):
  """The plumbing of --outcome, with bil_jax.main replaced by a stub that writes the
  held-out file: budgets turn into steps, runs start from copies of one pre-training."""
  pre = tmp_path / "pre"
  (pre / "pretrain").mkdir(parents=True)
  (pre / "tfds").mkdir()
  (pre / "config.json").write_text("{}")
  calls = []

  def fake_main(config_py, workdir, mode, overrides, log_path):
    assert os.path.isdir(os.path.join(workdir, "pretrain"))
    assert not os.path.exists(os.path.join(workdir, "config.json"))
    calls.append((overrides["meta.estimator"], overrides["meta.steps"]))
    end = 0.3 - 0.01 * overrides["meta.steps"]
    os.makedirs(os.path.join(workdir, "meta"))
    json.dump(
        {
            "start": {"heldout_l1_after": 0.3, "heldout_l1_before": 0.4},
            "end": {"heldout_l1_after": end, "heldout_l1_before": 0.4}
        }, open(os.path.join(workdir, "meta", "heldout_adaptation_0000000.json"), "w"))
    return {"returncode": 0, "wall_s": 1.0, "error": "", "command": []}

  monkeypatch.setattr(outcome, "run_main", fake_main)
  specs = [EstimatorSpec("second_order"), EstimatorSpec("first_order")]
  recs = outcome.run_outcome(config_lib.base_config(), specs,
                             {"second_order": 1.0, "first_order": 0.25}, steps=4, budget_s=0,
                             pretrained=str(pre), out_dir=str(tmp_path), log=lambda *_: None)
  # Budget = 4 x 1.0 s: second_order 4 steps in both settings (run once), first_order 16.
  assert sorted(calls) == [("first_order", 4), ("first_order", 16), ("second_order", 4)]
  got = {(r["setting"], r["estimator"]): r for r in recs}
  assert got[("same_time", "first_order")]["meta_steps"] == 16
  assert got[("same_time", "first_order")]["heldout_l1_after_end"] == pytest.approx(0.14)
  md = report.outcome_table(recs)
  assert md.count("| same_time |") == 2
  report.plot_outcome(recs, {"second_order": 2 ** 20, "first_order": 2 ** 19},
                      str(tmp_path / "outcome.png"))
  assert os.path.getsize(tmp_path / "outcome.png") > 0
  assert report.pareto_front([(1, 3), (2, 2), (3, 3), (2, 1)]) == [0, 3]
  assert outcome.budget_steps(1.0, 0.3) == 3 and outcome.budget_steps(0.1, 1) == 1


def test_outcome_seeds_give_mean_and_spread_and_reuse_a_given_pretraining(tmp_path, monkeypatch):
  """--outcome_seeds: every estimator runs with the same seeds (config.seed + i); the table
  reports their mean ± std; --outcome_settings picks settings; bad flags are one-line errors."""
  pre = tmp_path / "pre"
  (pre / "pretrain" / "checkpoints").mkdir(parents=True)
  calls = []

  def fake_main(config_py, workdir, mode, overrides, log_path):
    calls.append((overrides["meta.estimator"], overrides["seed"]))
    end = {"second_order": 0.2, "first_order": 0.1}[overrides["meta.estimator"]]
    end += 0.01 * (overrides["seed"] - 7)
    os.makedirs(os.path.join(workdir, "meta"))
    json.dump({"start": {"heldout_l1_after": 0.3}, "end": {"heldout_l1_after": end}},
              open(os.path.join(workdir, "meta", "heldout_adaptation_0000000.json"), "w"))
    return {"returncode": 0, "wall_s": 2.0, "error": "", "command": []}

  monkeypatch.setattr(outcome, "run_main", fake_main)
  config = config_lib.base_config()
  config.seed = 7
  specs = [EstimatorSpec("second_order"), EstimatorSpec("first_order")]
  recs = outcome.run_outcome(config, specs, {"second_order": 1.0, "first_order": 0.25}, steps=4,
                             budget_s=0, pretrained=str(pre), out_dir=str(tmp_path),
                             log=lambda *_: None, seeds=3, settings=["same_steps"])
  assert sorted(calls) == sorted((e, s) for e in ("second_order", "first_order") for s in (7, 8, 9))
  rows = {r["estimator"]: r for r in outcome.summarize(recs)}
  assert rows["first_order"]["seeds"] == 3
  assert rows["first_order"]["end_mean"] == pytest.approx(0.11)
  assert rows["first_order"]["end_std"] == pytest.approx(0.01)
  assert rows["second_order"]["gain_mean"] == pytest.approx(0.09)
  md = report.outcome_table(recs)
  assert "0.1100** ± 0.0100 [0.1000, 0.1200]" in md and md.count("| same_steps |") == 2
  report.plot_outcome(recs, {}, str(tmp_path / "outcome.png"))
  assert outcome.check_pretrained(str(pre)) == str(pre)
  with pytest.raises(FileNotFoundError, match="no pretrain/checkpoints"):
    outcome.check_pretrained(str(tmp_path))
  with pytest.raises(ValueError, match="--outcome_settings='same_step'"):
    outcome.parse_settings("same_step")
  with pytest.raises(ValueError, match="--outcome_seeds=0"):
    sweep.parse(config, options.make(outcome=True, outcome_seeds=0))


def test_torch_reference_computes_the_same_meta_gradients_as_jax():
  """torch_ref's meta-step is the same arithmetic as bil_jax's (float64, K=2 SGD steps).

  Both estimators, G and D: the eager PyTorch reference (torch.func) and
  bil_jax.estimators agree to float64 rounding on identical weights and data, so the
  speed comparison of the bench compares the same meta-step.
  """
  torch = pytest.importorskip("torch")
  from bil_jax import builders, estimators  # pylint: disable=import-outside-toplevel
  from bil_jax.bench import torch_ref  # pylint: disable=import-outside-toplevel
  with jax.enable_x64(True):
    config = config_lib.base_config()
    presets.apply_preset(config, "torch_ref_32", {})
    config.model.ngf = config.model.ndf = 4
    config.data.shots = config.data.queries = 2
    config.meta.inner_optimizer.lr = 0.05
    spec = builders.build_spec(config, 8)
    params = jax.tree.map(lambda a: np.asarray(a, np.float64),
                          builders.init_params(spec, 3, (32, 32)))
    # Biases and norm parameters away from their 0/1 initialisation, so all are checked.
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda a: a + 0.05 * rng.normal(size=a.shape), params)
    task = jax.tree.map(lambda a: a[0], common.random_tasks(config, 1, seed=1))
    task = jax.tree.map(lambda a: a.astype(np.float64) if a.dtype == np.float32 else a, task)
    loop = builders.inner_loop(config, spec, 2)
    ref = torch_ref.Reference(32, 4, 4, 8, inner_steps=2, inner_lr=0.05)
    tparams = torch_ref.torch_params_from_jax(params)
    ref.g, ref.d = tparams["G"], tparams["D"]

    def nchw(pairs):
      onehot = np.eye(8)[pairs["map"]].transpose(0, 3, 1, 2)
      return {
          "onehot": torch.from_numpy(onehot),
          "image": torch.from_numpy(pairs["image"].transpose(0, 3, 1, 2).copy())
      }

    ttask = {"support": nchw(task["support"]), "query": nchw(task["query"])}
    for name in ("second_order", "first_order"):
      want, _ = jax.jit(functools.partial(estimators.get(name), loop))(params, task,
                                                                       jax.random.PRNGKey(0))
      got_t, _ = ref.meta_gradient(ttask, name)
      want_t = torch_ref.torch_params_from_jax(jax.device_get(want))
      for net in ("G", "D"):
        for k, w in want_t[net].items():
          np.testing.assert_allclose(got_t[net][k].detach().numpy(), w.numpy(), rtol=1e-7,
                                     atol=1e-10, err_msg=f"{name} {net} {k}")


def test_torch_reference_runs_in_a_fresh_process_and_returns_its_record(tmp_path):
  pytest.importorskip("torch")
  o = dict(size=32, ngf=2, ndf=2, num_classes=3, shots=1, queries=1, repeats=1)
  r = sweep.torch_reference(o, "first_order", 1, 1, str(tmp_path))
  assert r["implementation"] == "pytorch_eager" and r["estimator"] == "first_order"
  assert (r["inner_steps"], r["meta_batch"], r["ngf"]) == (1, 1, 2)
  assert r["step_time_s"] > 0 and r["flops"] > 0 and r["device"] == "cpu"
  assert not os.listdir(tmp_path)  # the hand-over file is removed


def test_torch_reference_on_a_missing_gpu_is_a_one_line_error():
  torch = pytest.importorskip("torch")
  from bil_jax.bench import torch_ref  # pylint: disable=import-outside-toplevel
  if torch.cuda.is_available():
    pytest.skip("this machine has a GPU")
  with pytest.raises(SystemExit, match="--device cuda: torch .* sees no GPU"):
    torch_ref.measure(size=32, ngf=2, num_classes=3, meta_batch=1, shots=1, queries=1,
                      inner_steps=1, repeats=1, device="cuda")


def test_device_check_at_smoke_size_records_each_part_and_survives_a_failed_one(
    tmp_path, monkeypatch):
  """--preset=device_check --smoke on the CPU: the synthetic --mode=all run with its phase
  rates, the paper presets' pre-training and meta-steps, one markdown and one JSON table;
  a part that raises is recorded and the check goes on."""
  from bil_jax.bench import device_check  # pylint: disable=import-outside-toplevel

  def broken(*_):
    raise RuntimeError("no such device")

  monkeypatch.setattr(device_check, "torch_part", broken)
  paths = device_check.run(str(tmp_path), options.make(smoke=True), log=lambda *_: None)
  assert [os.path.basename(p) for p in paths] == ["device_check.json", "device_check.md"]
  rows = json.load(open(paths[0]))["rows"]
  by = {(r["part"], r["configuration"], r["estimator"]): r for r in rows}
  assert by[("synthetic", "--mode=all", "")]["status"] == "ok"
  assert by[("synthetic", "--mode=all", "")]["wall_s"] > 0
  for phase in ("pretrain", "meta"):
    assert by[("synthetic", f"{phase} steps", "")]["steps_per_s"] > 0
  for preset, est in (("paper_faces", "pretrain"), ("paper_streets", "first_order")):
    r = by[("paper", preset, est)]
    assert r["status"] == "ok" and r["step_time_s"] > 0 and r["flops"] > 0, r
    assert r["peak_memory_bytes"] > 0
  assert by[("torch", "", "")]["status"] == "failed: RuntimeError: no such device"
  md = open(paths[1]).read()
  assert md.count("| paper |") == 2 and "no such device" in md


def test_phase_rates_read_the_step_lines_of_a_main_log():
  from bil_jax.bench import device_check  # pylint: disable=import-outside-toplevel
  log = ("I1204 10:00:00.000000 1 loop.py:148] pretrain step 10: {'g_loss': 1.0}\n"
         "I1204 10:00:10.000000 1 loop.py:148] pretrain step 60: {'g_loss': 0.5}\n"
         "I1204 10:01:00.000000 1 loop.py:148] meta step 1: {}\n"
         "I1204 10:01:04.000000 1 loop.py:148] meta step 3: {}\n"
         "I1204 10:02:00.000000 1 main.py:99] XLA compile time: 12.50 s (7 programs, 0 loaded")
  rates = device_check.phase_rates(log)
  assert rates == {"pretrain": 5.0, "meta": 0.5, "compile_s": 12.5}


def test_compile_only_reports_flops_memory_analysis_and_one_step(tmp_path):
  config = _tiny_config(inner_steps=1, meta_batch=1)
  opts = options.make(estimators="first_order", compile_only=True, peak_size="small")
  result = sweep.run(config, opts, str(tmp_path), log=lambda *_: None,
                     setup=_tiny_setup(config, "first_order"))
  (r,) = result["cost"]
  parts = [r[f"xla_{k}_bytes"] for k in ("argument", "output", "temp", "alias")]
  assert r["xla_peak_bytes"] == parts[0] + parts[1] + parts[2] - parts[3] > 0
  assert r["flops"] > 0 and r["step_time_s"] > 0 and r["step_skipped"] == ""
  md = open(tmp_path / "bench.md").read()
  assert "## Compiled (--compile_only)" in md and "## Cost" not in md
  assert not (tmp_path / "bench.png").exists()
  assert len(open(tmp_path / "records.jsonl").readlines()) == 1
