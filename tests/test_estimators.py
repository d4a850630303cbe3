"""Meta-gradient estimators: finite differences, closed forms and identities."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

import tiny
from bil_jax import adapt, estimators, gan, streams


def _meta_losses(lp, params, task, rng):
  """(f_G, f_D)(theta) = (L_G, L_D)(Adapt_K(theta); T(te)), the functions differentiated."""
  adapted, _ = adapt.adapt(lp, params, task["support"], rng)
  t = gan.gan_losses(lp.spec, adapted, task["query"],
                     jax.random.fold_in(rng, streams.QUERY_DROPOUT))
  return t["g_loss"], t["d_loss"]


@pytest.mark.parametrize("inner", ["sgd", "adam"])
def test_second_order_matches_central_finite_differences_float64(inner):
  """Directional derivatives of the meta-losses equal <g, v> to 1e-5 relative, K=2."""
  with jax.enable_x64(True):
    sp = tiny.spec(lambda_a=0.5)
    lr = 0.1 if inner == "sgd" else 0.01
    lp = tiny.loop(sp, inner, lr=lr, steps=2)
    params = tiny.init_params(sp, seed=1, dtype=jnp.float64)
    task = tiny.task(3, dtype=np.float64)
    rng = jax.random.PRNGKey(0)
    grads, _ = jax.jit(functools.partial(estimators.second_order, lp))(params, task, rng)
    flat, unravel = ravel_pytree(params)
    f = jax.jit(lambda x: _meta_losses(lp, unravel(x), task, rng))
    # Adam's first steps are close to sign(g): high curvature where |g| is small, so
    # central differences need a smaller step (their error is O(eps^2)).
    eps = 1e-6 if inner == "sgd" else 1e-8
    vrng = np.random.default_rng(0)
    for net, which in (("G", 0), ("D", 1)):
      for _ in range(2):
        v = jax.tree.map(jnp.zeros_like, params)
        v[net] = jax.tree.map(lambda a: jnp.asarray(vrng.normal(size=a.shape), jnp.float64),
                              params[net])
        vflat, _ = ravel_pytree(v)
        fd = (f(flat + eps * vflat)[which] - f(flat - eps * vflat)[which]) / (2 * eps)
        analytic = ravel_pytree(grads[net])[0] @ ravel_pytree(v[net])[0]
        assert abs(fd - analytic) <= 1e-5 * max(abs(fd), 1e-3), (net, fd, analytic)


def test_second_order_k1_sgd_closed_form():
  """With lambda_a=0 and K=1 SGD: g_G = (I - alpha H_support) grad L_query(theta')."""
  with jax.enable_x64(True):
    sp = tiny.spec(lambda_a=0.0)
    alpha = 0.3
    lp = tiny.loop(sp, "sgd", lr=alpha, steps=1)
    params = tiny.init_params(sp, seed=2, dtype=jnp.float64)
    task = tiny.task(5, dtype=np.float64)
    rng = jax.random.PRNGKey(1)
    grads, _ = jax.jit(functools.partial(estimators.second_order, lp))(params, task, rng)

    g_flat, g_unravel = ravel_pytree(params["G"])
    d_params = params["D"]
    step_rng = jax.random.fold_in(rng, 0)
    q_rng = jax.random.fold_in(rng, streams.QUERY_DROPOUT)

    def support_g(gf):
      return gan.gan_losses(sp, {"G": g_unravel(gf), "D": d_params}, task["support"],
                            step_rng)["g_loss"]

    def query_g(gf):
      return gan.gan_losses(sp, {"G": g_unravel(gf), "D": d_params}, task["query"], q_rng)["g_loss"]

    hess = jax.jit(jax.hessian(support_g))(g_flat)
    g_prime = g_flat - alpha * jax.grad(support_g)(g_flat)
    expected = (jnp.eye(g_flat.size) - alpha * hess) @ jax.grad(query_g)(g_prime)
    np.testing.assert_allclose(ravel_pytree(grads["G"])[0], expected, rtol=1e-9, atol=1e-12)

    # D side: D' = D - alpha grad_D L_D(G, D; T(tr)); g_D = (I - alpha H_DD) grad_D L_D^q(G', D').
    d_flat, d_unravel = ravel_pytree(d_params)
    g_prime_tree = g_unravel(g_prime)

    def support_d(df):
      return gan.gan_losses(sp, {"G": params["G"], "D": d_unravel(df)}, task["support"],
                            step_rng)["d_loss"]

    def query_d(df):
      return gan.gan_losses(sp, {"G": g_prime_tree, "D": d_unravel(df)}, task["query"],
                            q_rng)["d_loss"]

    hess_d = jax.jit(jax.hessian(support_d))(d_flat)
    d_prime = d_flat - alpha * jax.grad(support_d)(d_flat)
    expected_d = (jnp.eye(d_flat.size) - alpha * hess_d) @ jax.grad(query_d)(d_prime)
    np.testing.assert_allclose(ravel_pytree(grads["D"])[0], expected_d, rtol=1e-9, atol=1e-12)


def test_first_order_is_query_gradient_at_adapted_params():
  sp = tiny.spec()
  lp = tiny.loop(sp, "adam", lr=0.01, steps=3)
  params = tiny.init_params(sp)
  task = tiny.task(7)
  rng = jax.random.PRNGKey(2)
  grads, _ = jax.jit(functools.partial(estimators.first_order, lp))(params, task, rng)
  adapted, _ = jax.jit(functools.partial(adapt.adapt, lp))(params, task["support"], rng)
  q_rng = jax.random.fold_in(rng, streams.QUERY_DROPOUT)
  query = jax.jit(jax.grad(lambda p, i: gan.gan_losses(sp, p, task["query"], q_rng)[i]),
                  static_argnums=1)
  gg, gd = query(adapted, "g_loss"), query(adapted, "d_loss")
  for got, want in ((grads["G"], gg["G"]), (grads["D"], gd["D"])):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), got, want)


def test_reptile_is_params_minus_adapted():
  sp = tiny.spec()
  lp = tiny.loop(sp, "adam", lr=0.01, steps=3)
  params = tiny.init_params(sp)
  task = tiny.task(8)
  rng = jax.random.PRNGKey(3)
  grads, metrics = jax.jit(functools.partial(estimators.reptile, lp))(params, task, rng)
  adapted, _ = jax.jit(functools.partial(adapt.adapt, lp))(params, task["support"], rng)
  jax.tree.map(lambda g, p, a: np.testing.assert_allclose(g, p - a, rtol=1e-6, atol=1e-8), grads,
               params, adapted)
  assert float(metrics["grad_norm_G"]) > 0


def test_vmap_over_tasks_equals_python_loop():
  sp = tiny.spec()
  lp = tiny.loop(sp, "adam", lr=0.01, steps=2)
  params = tiny.init_params(sp)
  seeds = [10, 11, 12]
  batch = tiny.meta_batch(seeds)
  rngs = jax.random.split(jax.random.PRNGKey(4), len(seeds))
  est = functools.partial(estimators.second_order, lp)
  vg, vm = jax.jit(jax.vmap(est, in_axes=(None, 0, 0)))(params, batch, rngs)
  vg = jax.tree.map(lambda g: g.mean(0), vg)
  one = jax.jit(est)
  outs = [one(params, tiny.task(s), r) for s, r in zip(seeds, rngs)]
  lg = jax.tree.map(lambda *g: sum(g) / len(g), *[o[0] for o in outs])
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), vg, lg)
  np.testing.assert_allclose(vm["query_g_loss_after"].mean(),
                             np.mean([o[1]["query_g_loss_after"] for o in outs]), rtol=1e-5)


@pytest.mark.parametrize("name", ["second_order", "first_order", "reptile"])
def test_remat_gives_same_gradients(name):
  sp = tiny.spec()
  params = tiny.init_params(sp)
  task = tiny.task(9)
  rng = jax.random.PRNGKey(5)
  outs = [
      jax.jit(
          functools.partial(estimators.get(name), tiny.loop(sp, "adam", lr=0.01, steps=3,
                                                            remat=r)))(params, task, rng)[0]
      for r in (False, True)
  ]
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), *outs)


def test_estimator_metrics_and_unknown_name():
  sp = tiny.spec()
  est = jax.jit(functools.partial(estimators.second_order, tiny.loop(sp, "sgd", lr=0.5, steps=3)))
  _, m = est(tiny.init_params(sp), tiny.task(1), jax.random.PRNGKey(0))
  for key in ("query_g_loss_before", "query_g_loss_after", "support_l1_first", "support_l1_last",
              "grad_norm_G", "grad_norm_D"):
    assert np.isfinite(float(m[key])), key
  # SGD on the support set lowers the support loss.
  assert float(m["support_l1_last"]) < float(m["support_l1_first"])
  with pytest.raises(ValueError, match="meta.estimator='nope'"):
    estimators.get("nope")
