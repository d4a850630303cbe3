"""The meta-gradient benchmark on a tiny configuration (tiny G and D of tests/tiny.py)."""
import functools
import json
import os

import jax
import numpy as np
import pytest

import tiny
from bil_jax import bench


def test_bench_writes_every_key_and_remat_keeps_the_loss(tmp_path):
  config = bench.make_config(size=tiny.H, num_classes=tiny.C, shots=2, queries=2,
                             inner_optimizer="sgd")
  sp = tiny.spec()
  setup = bench.make_setup(config, spec=sp, params=tiny.init_params(sp), model_name="tiny")
  opts = dict(estimators="second_order,first_order,reptile", remat="on,off",
              inner_steps="2", meta_batch="1", repeats=1, peak_size="small")
  records = bench.run(opts, str(tmp_path), log=lambda *_: None, setup=setup)

  with open(os.path.join(tmp_path, "bench.json")) as f:
    loaded = json.load(f)
  assert len(loaded) == len(records) == 3 * 2
  for r in loaded:
    for key in bench.RECORD_KEYS:
      assert key in r, key
    assert r["peak_memory_bytes"] > 0
    assert r["flops"] > 0 and r["flops_per_s"] > 0 and r["peak_flops_per_s"] > 0
    assert r["step_time_s"] > 0 and r["compile_time_s"] > 0
  assert os.path.getsize(os.path.join(tmp_path, "bench.png")) > 0
  table = open(os.path.join(tmp_path, "bench.md")).read()
  assert table.count("| second_order |") == 2

  by = {(r["estimator"], r["remat"], r["inner_steps"]): r for r in loaded}
  for est in ("second_order", "first_order", "reptile"):
    for k in (2,):
      np.testing.assert_allclose(by[(est, True, k)]["loss"], by[(est, False, k)]["loss"],
                                 rtol=1e-6)
  # FLOPs count every inner step: linear in K from unrolled lowerings at K=1 and 2.
  f1 = bench.step_flops(setup, "second_order", 1, False, _args(setup))
  assert by[("second_order", False, 2)]["flops"] > f1 > 0


def _args(setup):
  tasks = bench.random_tasks(setup.config, 1)
  rngs = bench.meta.task_rngs(jax.random.PRNGKey(0), 0, 1)
  return (setup.params, setup.opt_state, tasks, rngs, None)


def test_cli_parses_presets():
  opts, out = bench.parse_args(["--preset", "torch_ref_32", "--out", "x"])
  assert (opts["size"], opts["ngf"], opts["inner_steps"], opts["meta_batch"]) == (32, 16, "5", "5")
  assert opts["inner_optimizer"] == "sgd" and out == "x"
  opts, _ = bench.parse_args(["--quick", "--inner_steps", "1"])
  assert opts["inner_steps"] == "1" and opts["estimators"].count(",") == 2


def test_torch_reference_computes_the_same_meta_gradients_as_jax():
  """bench_torch's meta-step is the same arithmetic as bil_jax's (float64, K=2 SGD steps).

  Both estimators, G and D: the eager PyTorch reference (torch.func) and
  bil_jax.estimators agree to float64 rounding on identical weights and data, so the
  speed comparison of the bench compares the same meta-step.
  """
  torch = pytest.importorskip("torch")
  from bil_jax import bench_torch, builders, estimators  # pylint: disable=import-outside-toplevel
  with jax.enable_x64(True):
    config = bench.make_config(size=32, ngf=4, ndf=4, num_classes=8, shots=2, queries=2,
                               inner_optimizer="sgd")
    config.meta.inner_optimizer.lr = 0.05
    spec = builders.build_spec(config, 8)
    params = jax.tree.map(lambda a: np.asarray(a, np.float64),
                          builders.init_params(spec, 3, (32, 32)))
    # Biases and norm parameters away from their 0/1 initialisation, so all are checked.
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda a: a + 0.05 * rng.normal(size=a.shape), params)
    task = jax.tree.map(lambda a: a[0], bench.random_tasks(config, 1, seed=1))
    task = jax.tree.map(lambda a: a.astype(np.float64) if a.dtype == np.float32 else a, task)
    loop = builders.inner_loop(config, spec, 2)
    ref = bench_torch.Reference(32, 4, 4, 8, inner_steps=2, inner_lr=0.05)
    tparams = bench_torch.torch_params_from_jax(params)
    ref.g, ref.d = tparams["G"], tparams["D"]

    def nchw(pairs):
      onehot = np.eye(8)[pairs["map"]].transpose(0, 3, 1, 2)
      return {"onehot": torch.from_numpy(onehot),
              "image": torch.from_numpy(pairs["image"].transpose(0, 3, 1, 2).copy())}

    ttask = {"support": nchw(task["support"]), "query": nchw(task["query"])}
    for name in ("second_order", "first_order"):
      want, _ = jax.jit(functools.partial(estimators.get(name), loop))(
          params, task, jax.random.PRNGKey(0))
      got_t, _ = ref.meta_gradient(ttask, name)
      want_t = bench_torch.torch_params_from_jax(jax.device_get(want))
      for net in ("G", "D"):
        for k, w in want_t[net].items():
          np.testing.assert_allclose(got_t[net][k].detach().numpy(), w.numpy(), rtol=1e-7,
                                     atol=1e-10, err_msg=f"{name} {net} {k}")


def test_torch_reference_runs_in_a_fresh_process_and_returns_its_record(tmp_path):
  pytest.importorskip("torch")
  o = dict(bench.DEFAULTS, size=32, ngf=2, ndf=2, num_classes=3, shots=1, queries=1,
           repeats=1)
  r = bench.torch_reference(o, "first_order", 1, 1, str(tmp_path))
  assert r["implementation"] == "pytorch_eager" and r["estimator"] == "first_order"
  assert (r["inner_steps"], r["meta_batch"], r["ngf"]) == (1, 1, 2)
  assert r["step_time_s"] > 0 and r["flops"] > 0
  assert not os.listdir(tmp_path)       # the hand-over file is removed
