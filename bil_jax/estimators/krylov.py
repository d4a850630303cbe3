"""Matrix-free Krylov solvers for non-symmetric systems A x = b, in plain JAX.

They run anywhere a JAX function runs: under ``jit``, ``vmap`` and inside the meta-step's
``shard_map``, where every vector they make derives from ``b`` and so shares its
device-varying type (solver libraries that build their own vectors or probe the
operator's output shape with ``eval_shape`` do not work there). Both return the solution
and the number of iterations taken. Vectors are 1-D: [n].
"""
from typing import Callable, Tuple

import jax
import jax.numpy as jnp


def _safe(d: jax.Array) -> jax.Array:
  return jnp.where(d == 0, jnp.ones_like(d), d)


def gmres(matvec: Callable, b: jax.Array, tol: float,
          max_iters: int) -> Tuple[jax.Array, jax.Array]:
  """GMRES (Saad & Schultz) without restarts, from x0 = 0.

  Arnoldi with twice-repeated classical Gram-Schmidt builds an orthonormal basis V of
  the Krylov space; x = V y with y the least-squares solution of H y = ||b|| e1, where
  H is the (k+1) x k Hessenberg matrix. Stops when ||b - A x|| <= tol (||b|| + 1) or
  after ``max_iters`` iterations.

  Args:
    matvec: x [n] -> A x [n].
    b: [n].
    tol: tolerance on the residual norm, relative to ||b|| (plus the same absolute).
    max_iters: m, the largest Krylov dimension.

  Returns:
    (x [n], iterations int32 scalar).
  """
  m = int(max_iters)
  beta = jnp.linalg.norm(b)
  e1 = jnp.zeros((m + 1,), b.dtype).at[0].set(1.0) * beta
  basis = jnp.zeros((m + 1,) + b.shape, b.dtype).at[0].set(b / _safe(beta))
  hess = jnp.zeros((m + 1, m), b.dtype) * beta
  rows = jnp.arange(m + 1)

  def least_squares(h):
    y = jnp.linalg.lstsq(h, e1)[0]
    return y, jnp.linalg.norm(e1 - h @ y)

  def cond(state):
    k, _, _, res = state
    return (k < m) & (res > tol * (beta + 1.0))

  def body(state):
    k, v, h, _ = state
    w = matvec(v[k])
    col = jnp.zeros((m + 1,), b.dtype) * beta
    for _ in range(2):
      proj = jnp.where(rows <= k, v @ w, 0.0)
      w = w - proj @ v
      col = col + proj
    norm = jnp.linalg.norm(w)
    col = col.at[k + 1].set(norm)
    h = h.at[:, k].set(col)
    v = v.at[k + 1].set(w / _safe(norm))
    return k + 1, v, h, least_squares(h)[1]

  k, basis, hess, _ = jax.lax.while_loop(cond, body, (jnp.int32(0), basis, hess, beta))
  y, _ = least_squares(hess)
  return y @ basis[:m], k


def bicgstab(matvec: Callable, b: jax.Array, tol: float,
             max_iters: int) -> Tuple[jax.Array, jax.Array]:
  """BiCGStab (van der Vorst) from x0 = 0; stops as :func:`gmres` does.

  Returns:
    (x [n], iterations int32 scalar).
  """
  bnorm = jnp.linalg.norm(b)
  zero = jnp.zeros_like(b)
  one = jnp.ones((), b.dtype) + 0.0 * bnorm

  def cond(state):
    k, _, r, *_ = state
    return (k < max_iters) & (jnp.linalg.norm(r) > tol * (bnorm + 1.0))

  def body(state):
    k, x, r, p, v, rho, alpha, omega = state
    rho_new = b @ r
    beta = (rho_new / _safe(rho)) * (alpha / _safe(omega))
    p = r + beta * (p - omega * v)
    v = matvec(p)
    alpha = rho_new / _safe(b @ v)
    s = r - alpha * v
    t = matvec(s)
    omega = (t @ s) / _safe(t @ t)
    x = x + alpha * p + omega * s
    r = s - omega * t
    return k + 1, x, r, p, v, rho_new, alpha, omega

  state = (jnp.int32(0), zero, b, zero, zero, one, one, one)
  k, x, *_ = jax.lax.while_loop(cond, body, state)
  return x, k
