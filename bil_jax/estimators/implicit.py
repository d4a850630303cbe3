"""``implicit``: implicit MAML for the two-player GAN game (memory flat in K).

The IS adaptation approximately solves the proximally regularised game on T(tr),
starting from the GP parameters phi:

  G: min L_G + (lam/2)||theta_G - phi_G||^2,   D: min L_D + (lam/2)||theta_D - phi_D||^2.

At its equilibrium theta*, F(theta*) + lam (theta* - phi) = 0 with the game gradient
F = (dL_G/dtheta_G, dL_D/dtheta_D) on T(tr). Its Jacobian J = dF/dtheta is NOT
symmetric (the players' cross terms differ), so

  dtheta*/dphi = lam (J + lam I)^{-1},   g = lam (J + lam I)^{-T} dL^query/dtheta*,

g_G the G block with L_G^query, g_D the D block with L_D^query. Each of the two linear
systems (J + lam I)^T x = v is solved matrix-free from vector-Jacobian products of F
with a solver for non-symmetric systems (GMRES or BiCGStab, :mod:`krylov`; conjugate
gradient assumes symmetry and is wrong here). Nothing of the unroll is kept, so memory does not
depend on K. The inner steps approximate theta*: more steps, or a larger lam, bring the
estimate closer to the true implicit gradient.
"""
import dataclasses
from typing import Callable, Tuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from bil_jax import adapt as adapt_lib
from bil_jax import gan
from bil_jax.estimators import core
from bil_jax.estimators import krylov

SOLVERS = ("gmres", "bicgstab")
# The game gradient F at theta* draws dropout from its own stream of the task's key.
GAME_STREAM = 2 ** 20 + 2


def game_gradient(loop, support, rng, frozen) -> Callable:
  """theta {'G','D'} -> F(theta) = {'G': dL_G/dG, 'D': dL_D/dD} on ``support``."""

  def losses(p, which):
    return gan.gan_losses(loop.spec, p, support, rng, frozen)[which]

  def f(theta):
    return {
        "G": jax.grad(lambda g: losses(dict(theta, G=g), "g_loss"))(theta["G"]),
        "D": jax.grad(lambda d: losses(dict(theta, D=d), "d_loss"))(theta["D"])
    }

  return f


def solve_transposed(f: Callable, theta_star, v, lam: float, solver: str = "gmres",
                     tol: float = 1e-6, max_iters: int = 100) -> Tuple[dict, dict]:
  """x with (J + lam I)^T x = v, J = df/dtheta at ``theta_star``; matrix-free.

  Args:
    f: the game gradient, a pytree -> pytree map shaped like ``theta_star``.
    theta_star: the point of linearisation.
    v: right-hand side shaped like ``theta_star``.
    lam: the proximal weight (> 0).
    solver: 'gmres' | 'bicgstab'.
    tol: relative and absolute tolerance.
    max_iters: maximum solver iterations.

  Returns:
    (x, {'residual': ||(J + lam I)^T x - v|| / ||v||, 'iterations': steps taken}).
  """
  _, vjp = jax.vjp(f, theta_star)
  flat_v, unravel = ravel_pytree(v)

  def matvec(x_flat):
    x = unravel(x_flat)
    return ravel_pytree(jax.tree.map(lambda a, b: a + lam * b, vjp(x)[0], x))[0]

  if solver not in SOLVERS:
    raise ValueError(f"meta.estimator_options solver={solver!r} is not one of {SOLVERS}")
  solve = krylov.gmres if solver == "gmres" else krylov.bicgstab
  x_flat, iterations = solve(matvec, flat_v, tol, max_iters)
  res = jnp.linalg.norm(matvec(x_flat) - flat_v) / jnp.maximum(jnp.linalg.norm(flat_v), 1e-30)
  return unravel(x_flat), {"residual": res, "iterations": iterations.astype(jnp.float32)}


def implicit(loop, params, task, rng, frozen=None, *, lam: float = 1.0, solver: str = "gmres",
             tol: float = 1e-6, max_iters: int = 100):
  """Implicit meta-gradient of the proximally regularised GAN game. (grads, metrics)."""
  if lam <= 0:
    raise ValueError(f"meta.estimator_options lam={lam}: the proximal weight must be > 0")
  if set(params) != {"G", "D"}:
    raise ValueError("implicit: meta-parameters other than G and D are not supported")
  prox_loop = dataclasses.replace(loop, penalty=adapt_lib.proximal_penalty(lam))
  star, support_m = core.adapt(prox_loop, params, task["support"], rng, frozen)
  star = jax.lax.stop_gradient(star)
  (lg, _), pullback, after = jax.vjp(lambda p: core.query_losses(loop, p, task, rng, frozen), star,
                                     has_aux=True)
  vg, vd = core.pull_both(pullback, lg)
  f = game_gradient(loop, task["support"], jax.random.fold_in(rng, GAME_STREAM), frozen)
  xg, sg = solve_transposed(f, star, vg, lam, solver, tol, max_iters)
  xd, sd = solve_transposed(f, star, vd, lam, solver, tol, max_iters)
  grads = {
      "G": jax.tree.map(lambda a: lam * a, xg["G"]), "D": jax.tree.map(lambda a: lam * a, xd["D"])
  }
  _, before = core.query_losses(loop, params, task, rng, frozen)
  metrics = core.standard_metrics(before, after, support_m, grads)
  metrics.update(solver_residual_G=sg["residual"], solver_residual_D=sd["residual"],
                 solver_iterations_G=sg["iterations"], solver_iterations_D=sd["iterations"])
  return grads, metrics
