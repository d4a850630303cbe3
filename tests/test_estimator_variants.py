"""Truncated backpropagation, evolution strategies, and estimators as plug-ins."""
import dataclasses
import functools
import importlib
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import tiny
from bil_jax import estimators, gan
from bil_jax.estimators import core


def _grads(name, lp, params, task, rng, **opts):
  fn = functools.partial(estimators.get(name), lp, **opts)
  return jax.jit(lambda p, t, r: fn(p, t, r))(params, task, rng)[0]


def _assert_trees_equal(a, b, rtol=0.0):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=rtol, atol=0), a, b)


def test_truncated_all_steps_is_second_order_and_none_is_first_order():
  """T = K equals second_order and T = 0 equals first_order (float64, to rounding)."""
  with jax.enable_x64(True):
    _, lp, params, task, rng = tiny.problem64("adam", lr=0.01, steps=3)
    _assert_trees_equal(_grads("truncated", lp, params, task, rng, backprop_steps=3),
                        _grads("second_order", lp, params, task, rng), rtol=1e-12)
    _assert_trees_equal(_grads("truncated", lp, params, task, rng, backprop_steps=0),
                        _grads("first_order", lp, params, task, rng), rtol=1e-12)


def test_truncated_matches_finite_differences_of_its_definition():
  """g = d/dtheta L_query(Run_T(theta + c)) with c = theta_{K-T} - theta held fixed."""
  with jax.enable_x64(True):
    k, t = 3, 2
    _, lp, params, task, rng = tiny.problem64("sgd", lr=0.1, steps=k, seed=2, task_seed=4,
                                              rng_seed=1)
    grads = _grads("truncated", lp, params, task, rng, backprop_steps=t)
    s0 = gan.init_opt_state(lp.optimizer, params)
    head, head_s, _ = core.run_steps(lp, params, s0, task["support"], rng, None, 0, k - t)
    offset = jax.tree.map(lambda h, p: h - p, head, params)
    _, unravel = ravel_pytree(params)

    @jax.jit
    def f(x):
      start = jax.tree.map(lambda a, c: a + c, unravel(x), offset)
      out, _, _ = core.run_steps(lp, start, head_s, task["support"], rng, None, k - t, t)
      return jnp.stack(core.query_losses(lp, out, task, rng)[0])

    tiny.assert_matches_directional_fd(f, grads, params, eps=1e-6, rtol=1e-6)


def test_truncated_rejects_too_many_steps():
  sp = tiny.spec()
  lp = tiny.loop(sp, "sgd", lr=0.1, steps=2)
  with pytest.raises(ValueError, match="backprop_steps=3"):
    estimators.truncated(lp, tiny.init_params(sp), tiny.task(0), jax.random.PRNGKey(0),
                         backprop_steps=3)


def _cosine(a, b):
  a, b = ravel_pytree(a)[0], ravel_pytree(b)[0]
  return float(a @ b / (jnp.linalg.norm(a) * jnp.linalg.norm(b)))


def test_es_agrees_with_second_order_with_many_pairs():
  """Small sigma, 1,000 antithetic pairs: cosine similarity with the exact gradient > 0.7
  for each net (0.82 and 0.80 at this seed; a wrong estimator is near 0 or negative)."""
  with jax.enable_x64(True):
    _, lp, params, task, rng = tiny.problem64("sgd", lr=0.1, steps=2, seed=3, task_seed=5,
                                              rng_seed=2)
    exact = _grads("second_order", lp, params, task, rng)
    est = _grads("es", lp, params, task, rng, pairs=1000, sigma=1e-4)
    for net in ("G", "D"):
      assert _cosine(est[net], exact[net]) > 0.7, net


def test_options_are_parsed_by_their_declared_types_and_bad_ones_named():
  assert estimators.options(estimators.get("es")) == {"pairs": 8, "sigma": 0.01}
  assert estimators.parse_options(estimators.get("es"),
                                  "pairs=3, sigma=0.5") == {"pairs": 3, "sigma": 0.5}
  with pytest.raises(ValueError, match="'nope=1' is not name=value of an option of es"):
    estimators.parse_options(estimators.get("es"), "nope=1", "es")
  with pytest.raises(ValueError, match="pairs='x' is not a int"):
    estimators.parse_options(estimators.get("es"), "pairs=x")
  with pytest.raises(ValueError, match="meta.estimator='nope'"):
    estimators.get("nope")
  with pytest.raises(ValueError, match="cannot import 'no_such_module_xyz'"):
    estimators.get("no_such_module_xyz:f")


def test_user_estimator_from_outside_the_package(tmp_path, monkeypatch):
  """``module:function`` imports a user's estimator; its options bind like built-ins'."""
  (tmp_path / "my_estimators.py").write_text(
      "import jax\n"
      "from bil_jax.estimators import core\n\n"
      "def scaled_first_order(loop, params, task, rng, frozen=None, *, scale: float = 1.0):\n"
      "  adapted, support = core.adapt(loop, params, task['support'], rng, frozen)\n"
      "  grads, after = core.query_gradients_at(loop, adapted, task, rng, frozen)\n"
      "  grads = jax.tree.map(lambda g: scale * g, grads)\n"
      "  _, before = core.query_losses(loop, params, task, rng, frozen)\n"
      "  return grads, core.standard_metrics(before, after, support, grads)\n")
  monkeypatch.syspath_prepend(str(tmp_path))
  sp = tiny.spec()
  lp = tiny.loop(sp, "adam", lr=0.01, steps=2)
  params, task, rng = tiny.init_params(sp), tiny.task(6), jax.random.PRNGKey(3)
  mine = estimators.resolve("my_estimators:scaled_first_order", "scale=2")
  got = jax.jit(functools.partial(mine, lp))(params, task, rng)[0]
  want = _grads("first_order", lp, params, task, rng)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, 2 * b, rtol=1e-6, atol=1e-8), got, want)
  sys.modules.pop("my_estimators", None)


@pytest.mark.parametrize("name,opts", [("second_order", {}), ("truncated", {"backprop_steps": 5})])
def test_nested_remat_equals_none_and_step(name, opts):
  """Nested segments (K=7: segments of 3, 3 and 1) give the gradients of no remat."""
  with jax.enable_x64(True):
    sp = tiny.spec(lambda_a=0.5)
    params = tiny.init_params(sp, seed=4, dtype=jnp.float64)
    task = tiny.task(6, dtype=np.float64)
    rng = jax.random.PRNGKey(4)
    outs = [
        _grads(name, tiny.loop(sp, "adam", lr=0.01, steps=7, remat=r), params, task, rng, **opts)
        for r in ("none", "step", "nested")
    ]
    _assert_trees_equal(outs[0], outs[1], rtol=1e-12)
    _assert_trees_equal(outs[0], outs[2], rtol=1e-12)


# ---- implicit differentiation through the game ------------------------------------


def _quadratic_game(seed=0):
  """F(theta) = A theta + b over theta = {'G': [2], 'D': [3]}, A non-symmetric."""
  rng = np.random.default_rng(seed)
  a = rng.normal(size=(5, 5))
  a[:2, 2:] += 2.0  # G's gradient depends on D much more than D's on G
  b = rng.normal(size=5)
  split = lambda x: {"G": x[:2], "D": x[2:]}
  join = lambda t: jnp.concatenate([t["G"], t["D"]])
  f = lambda t: split(jnp.asarray(a) @ join(t) + jnp.asarray(b))
  return a, f, split, join


@pytest.mark.parametrize("solver", ["gmres", "bicgstab"])
def test_implicit_solve_equals_closed_form_on_a_quadratic_game(solver):
  """lam (J + lam I)^{-T} v, matrix-free, equals the dense closed form to 1e-6 (float64)."""
  imp = importlib.import_module("bil_jax.estimators.implicit")
  with jax.enable_x64(True):
    a, f, split, join = _quadratic_game()
    lam = 1.5
    v = split(jnp.asarray(np.random.default_rng(1).normal(size=5)))
    theta = split(jnp.zeros(5))
    x, stats = imp.solve_transposed(f, theta, v, lam, solver, tol=1e-12, max_iters=50)
    want = lam * np.linalg.solve((a + lam * np.eye(5)).T, np.asarray(join(v)))
    np.testing.assert_allclose(lam * np.asarray(join(x)), want, rtol=1e-6, atol=1e-9)
    assert float(stats["residual"]) < 1e-8 and 0 < float(stats["iterations"]) <= 50


def test_a_symmetric_solver_is_wrong_on_the_game():
  """Conjugate gradient assumes a symmetric system; on the game its answer is off."""
  with jax.enable_x64(True):
    a, f, split, join = _quadratic_game()
    lam = 1.5
    v = np.random.default_rng(1).normal(size=5)
    want = np.linalg.solve((a + lam * np.eye(5)).T, v)
    matvec = lambda x: (jnp.asarray(a).T + lam * jnp.eye(5)) @ x
    cg, _ = jax.scipy.sparse.linalg.cg(matvec, jnp.asarray(v), tol=1e-12, maxiter=200)
    assert np.linalg.norm(np.asarray(cg) - want) > 0.1 * np.linalg.norm(want)


def test_implicit_agrees_with_second_order_through_the_regularised_unroll():
  """Many small inner steps reach the regularised game's equilibrium: cosine > 0.99."""
  from bil_jax import adapt
  with jax.enable_x64(True):
    sp = tiny.spec(lambda_a=0.5)
    lam = 1.0
    lp = tiny.loop(sp, "sgd", lr=0.2, steps=80)
    params = tiny.init_params(sp, seed=5, dtype=jnp.float64)
    task = tiny.task(7, dtype=np.float64)
    rng = jax.random.PRNGKey(5)
    imp = _grads("implicit", lp, params, task, rng, lam=lam, tol=1e-10, max_iters=200)
    prox = dataclasses.replace(lp, penalty=adapt.proximal_penalty(lam))
    exact = _grads("second_order", prox, params, task, rng)
    for net in ("G", "D"):
      assert _cosine(imp[net], exact[net]) > 0.99, net


# ---- Meta-SGD and partial adaptation ----------------------------------------------


def test_meta_sgd_rate_gradients_match_finite_differences():
  """d L_G^q / d s_G and d L_D^q / d s_D equal float64 central differences."""
  from bil_jax import adapt
  with jax.enable_x64(True):
    sp = tiny.spec(lambda_a=0.5)
    lp = tiny.loop(sp, "sgd", lr=0.1, steps=2)
    params = estimators.init_meta_parameters("meta_sgd",
                                             tiny.init_params(sp, seed=6, dtype=jnp.float64))
    r = np.random.default_rng(2)
    params[adapt.UPDATE_SCALE] = jax.tree.map(
        lambda s: s * jnp.asarray(r.uniform(0.5, 1.5, s.shape)), params[adapt.UPDATE_SCALE])
    task = tiny.task(8, dtype=np.float64)
    rng = jax.random.PRNGKey(6)
    grads = _grads("meta_sgd", lp, params, task, rng)
    flat, unravel = ravel_pytree(params)
    f = jax.jit(lambda x: jnp.stack(
        core.query_losses(lp,
                          core.adapt(lp, unravel(x), task["support"], rng)[0], task, rng)[0]))
    for net, which in (("G", 0), ("D", 1)):
      v = jax.tree.map(jnp.zeros_like, params)
      v[adapt.UPDATE_SCALE][net] = jax.tree.map(lambda a: jnp.asarray(r.normal(size=a.shape)),
                                                params[adapt.UPDATE_SCALE][net])
      vflat = ravel_pytree(v)[0]
      eps = 1e-6
      fd = (f(flat + eps * vflat)[which] - f(flat - eps * vflat)[which]) / (2 * eps)
      analytic = (ravel_pytree(grads[adapt.UPDATE_SCALE][net])[0]
                  @ ravel_pytree(v[adapt.UPDATE_SCALE][net])[0])
      assert abs(fd - analytic) <= 1e-6 * max(abs(fd), 1e-3), (net, fd, analytic)


def test_meta_sgd_scales_change_the_adaptation():
  from bil_jax import adapt
  sp = tiny.spec()
  lp = tiny.loop(sp, "sgd", lr=0.1, steps=2)
  params = estimators.init_meta_parameters("meta_sgd", tiny.init_params(sp))
  task, rng = tiny.task(9), jax.random.PRNGKey(7)
  plain, _ = adapt.adapt(lp, adapt.networks(params), task["support"], rng)
  ones, _ = adapt.adapt(lp, params, task["support"], rng)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
               adapt.networks(ones), plain)  # s = 1: plain adaptation
  doubled = dict(params,
                 **{adapt.UPDATE_SCALE: jax.tree.map(lambda s: 2 * s, params[adapt.UPDATE_SCALE])})
  two, _ = adapt.adapt(lp, doubled, task["support"], rng)
  delta = lambda p: ravel_pytree(
      jax.tree.map(jnp.subtract, adapt.networks(p), adapt.networks(params)))[0]
  assert float(jnp.linalg.norm(delta(two) - 2 * delta(ones))) < 0.5 * float(
      jnp.linalg.norm(delta(ones)))  # SGD: twice the rate, about twice the step


@pytest.mark.parametrize("name", ["second_order", "first_order", "reptile", "truncated"])
def test_adapt_mask_freezes_the_rest_during_adaptation(name):
  """Only 'G/*' adapts: D' = D exactly, G' moves; every estimator still runs."""
  from bil_jax import adapt
  sp = tiny.spec()
  lp = dataclasses.replace(tiny.loop(sp, "adam", lr=0.01, steps=2), adapt_mask=("G/*",))
  params, task, rng = tiny.init_params(sp), tiny.task(10), jax.random.PRNGKey(8)
  adapted, _ = adapt.adapt(lp, params, task["support"], rng)
  _assert_trees_equal(adapted["D"], params["D"])
  assert float(
      ravel_pytree(jax.tree.map(jnp.subtract, adapted["G"], params["G"]))[0]
      @ ravel_pytree(jax.tree.map(jnp.subtract, adapted["G"], params["G"]))[0]) > 0
  grads = _grads(name, lp, params, task, rng)
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
  with pytest.raises(ValueError, match="matches no parameter"):
    adapt.check_mask(("X/*",), params)
