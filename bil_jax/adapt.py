"""IS adaptation (Sec. 3.2, Eq. 1; Alg. 1 lines 13-15; Alg. 2 lines 9-11).

K alternating GAN updates (D then G, :func:`bil_jax.gan.gan_step`) on a task's support
set T(tr), starting from the GP parameters, under ``lax.scan``. The inner optimizer is
any Optax ``GradientTransformation`` whose state is created fresh for every task; the
whole unroll is differentiable, so meta-gradients can flow through it. With
``remat='step'`` (or True) each inner step is wrapped in ``jax.checkpoint``: the backward
pass keeps only the per-step carries (parameters and optimizer state), not the
activations, so activation memory does not grow with K. ``remat='nested'`` also splits
the K steps into about sqrt(K) segments checkpointed at their boundaries: the backward
pass keeps sqrt(K) segment carries and recomputes one segment's per-step carries at a
time, so stored carries grow like sqrt(K) rather than K (one more forward pass).
"""
import math
import dataclasses
import fnmatch
import functools
from typing import Any, Callable, Optional, Tuple

import jax
import jax.numpy as jnp
import optax

from bil_jax import gan


@dataclasses.dataclass(frozen=True)
class InnerLoop:
  """Static description of an IS adaptation.

  Attributes:
    spec: the GAN (modules, loss weights).
    optimizer: Optax transformation used for both G and D inner updates.
    steps: K, the number of GAN updates.
    remat: 'none' (or False), 'step' (or True: ``jax.checkpoint`` each step) or 'nested'
      (checkpointed segments of about sqrt(K) checkpointed steps); see :func:`remat_mode`.
    unroll: ``lax.scan``'s unroll (1: a loop; True: K copies of the step, which lets
      XLA's cost analysis count every step; the result is the same).
    penalty: an extra inner-loss term ``(net, p, anchor_p) -> scalar`` for both networks,
      anchored at the parameters the adaptation starts from (e.g.
      :func:`proximal_penalty`); None: none.
    adapt_mask: fnmatch patterns over parameter paths ('G/Conv_0/kernel'): only matching
      parameters are adapted, the rest keep their GP values (ANIL-style); () = all.
  """
  spec: gan.GanSpec
  optimizer: optax.GradientTransformation
  steps: int
  remat: bool | str = False
  unroll: int | bool = 1
  penalty: Optional[Callable] = None
  adapt_mask: Tuple[str, ...] = ()


# The extra meta-learned pytree of Meta-SGD: per-parameter multipliers s of the inner
# updates, {'G': like G, 'D': like D}; the effective inner rate of a parameter is
# s * (the inner optimizer's rate). It starts at 1 (alpha = meta.inner_lr).
UPDATE_SCALE = "inner_lr_scale"
NETS = ("G", "D")


def networks(params: Any) -> dict:
  """The {'G', 'D'} part of GP parameters that may carry extra meta-parameters."""
  return {k: params[k] for k in NETS}


def with_networks(params: Any, nets: dict) -> dict:
  """``params`` with its {'G', 'D'} replaced by ``nets`` (meta-parameters kept)."""
  return dict(params, **nets)


def proximal_penalty(lam: float) -> Callable:
  """(net, p, anchor) -> (lam/2) ||p - anchor||^2: implicit MAML's regulariser."""
  return functools.partial(_proximal, float(lam))


def _proximal(lam, net, p, anchor):
  del net
  sq = jax.tree.map(lambda a, b: jnp.sum((a - b) ** 2), p, anchor)
  return 0.5 * lam * sum(jax.tree.leaves(sq))


def mask_tree(patterns: Tuple[str, ...], nets: dict) -> dict:
  """Bool leaves over {'G', 'D'}: True where a '/'-joined path (e.g. 'G/Conv_0/kernel')
  matches one of the fnmatch ``patterns``; all True when there are none."""

  def match(path, _):
    name = "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path)
    return not patterns or any(fnmatch.fnmatchcase(name, pat) for pat in patterns)

  return jax.tree_util.tree_map_with_path(match, nets)


def check_mask(patterns: Tuple[str, ...], nets: dict) -> None:
  """One-line error when ``meta.adapt_mask`` names no parameter."""
  if patterns and not any(jax.tree.leaves(mask_tree(patterns, nets))):
    raise ValueError(f"meta.adapt_mask={','.join(patterns)!r} matches no parameter (paths look "
                     "like 'G/Conv_0/kernel'; patterns are fnmatch, e.g. 'G/*' or '*/bias')")


REMAT_MODES = ("none", "step", "nested")


def remat_mode(remat: bool | str) -> str:
  """'none' | 'step' | 'nested' from a mode name or a bool (False: none, True: step)."""
  if isinstance(remat, bool):
    return "step" if remat else "none"
  if remat not in REMAT_MODES:
    raise ValueError(f"meta.remat={remat!r} is not one of {REMAT_MODES} (or a bool)")
  return remat


def segment_length(num_steps: int) -> int:
  """Steps per checkpointed segment of nested remat: ceil(sqrt(num_steps)), at least 1."""
  return max(1, math.ceil(math.sqrt(num_steps)))


def adapt(loop: InnerLoop, params: Any, support: gan.Pairs, rng: jax.Array, frozen: Any = None):
  """Adapts GP parameters to one task: theta' = Adapt_K(theta; T(tr)).

  Args:
    loop: the static inner loop.
    params: {'G', 'D'} GP parameters theta, optionally with meta-parameters (Meta-SGD's
      :data:`UPDATE_SCALE`), which are used, not adapted.
    support: Pairs with leading batch [n] (the n shots).
    rng: PRNG key; step k uses ``fold_in(rng, k)`` for dropout.
    frozen: never-trained arrays (VGG16 parameters) or None.

  Returns:
    (adapted_params, metrics): adapted_params has the keys of ``params``; metrics holds
    per-step support losses, each [K].
  """
  opt_state = gan.init_opt_state(loop.optimizer, params)
  params, _, metrics = run_steps(loop, params, opt_state, support, rng, frozen)
  return params, metrics


def run_steps(loop: InnerLoop, params: Any, opt_state: Any, support: gan.Pairs, rng: jax.Array,
              frozen: Any = None, first_step: int = 0, num_steps: int | None = None,
              anchor: Any = None):
  """Inner steps ``first_step .. first_step + num_steps - 1`` from a given inner state.

  The hook that truncated and persistent unrolls need: the adaptation can start from
  any inner optimizer state and returns its final one. Step k draws its dropout from
  ``fold_in(rng, k)``, so running steps 0..j-1 and then j..K-1 equals one K-step run.

  Args:
    loop: the static inner loop.
    params: {'G', 'D'} parameters to start from (plus meta-parameters, passed through).
    opt_state: {'G', 'D'} inner optimizer state (``gan.init_opt_state`` for a fresh one).
    support: Pairs with leading batch [n].
    rng: the task's PRNG key.
    frozen: never-trained arrays or None.
    first_step: index of the first step (static).
    num_steps: how many steps (static); None -> ``loop.steps - first_step``.
    anchor: {'G', 'D'} reference point of ``loop.penalty``; None -> the start ``params``.

  Returns:
    (params, opt_state, metrics) with per-step support losses, each [num_steps].
  """
  n = loop.steps - first_step if num_steps is None else num_steps
  nets = networks(params)
  anchor = nets if anchor is None else networks(anchor)
  scale = params.get(UPDATE_SCALE) if isinstance(params, dict) else None
  mask = mask_tree(loop.adapt_mask, nets) if loop.adapt_mask else None

  def step(carry, k):
    p, s = carry
    new, s, m = gan.gan_step(loop.spec, loop.optimizer, p, s, support, jax.random.fold_in(rng, k),
                             frozen, penalty=loop.penalty, anchor=anchor, update_scale=scale)
    if mask is not None:
      new = jax.tree.map(lambda keep, a, b: jnp.where(keep, a, b), mask, new, p)
    return (new, s), m

  mode = remat_mode(loop.remat)
  if mode != "none":
    step = jax.checkpoint(step)
  ks = first_step + jnp.arange(n)
  if mode != "nested" or n < 4:
    (nets, opt_state), metrics = jax.lax.scan(step, (nets, opt_state), ks, unroll=loop.unroll)
    return with_networks(params, nets), opt_state, metrics

  @jax.checkpoint
  def segment(carry, seg_ks):
    return jax.lax.scan(step, carry, seg_ks, unroll=loop.unroll)

  seg = segment_length(n)
  full = n // seg
  carry, metrics = jax.lax.scan(segment, (nets, opt_state), ks[:full * seg].reshape(full, seg))
  metrics = jax.tree.map(lambda m: m.reshape((full * seg,) + m.shape[2:]), metrics)
  if n > full * seg:
    carry, rest = segment(carry, ks[full * seg:])
    metrics = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), metrics, rest)
  return with_networks(params, carry[0]), carry[1], metrics


def adapt_and_generate(loop: InnerLoop, params: Any, support: gan.Pairs, query: gan.Pairs,
                       rng: jax.Array, frozen: Any = None):
  """IS adaptation on ``support``, then generation for ``query`` (Alg. 2 lines 5-13).

  Returns:
    (fake [q,H,W,3] from the adapted G without dropout, adapted_params).
  """
  adapted, _ = adapt(loop, params, support, rng, frozen)
  return gan.generate(loop.spec, adapted["G"], query, rng, train=False), adapted


def adapt_at(loop: InnerLoop, params: Any, support: gan.Pairs, query: gan.Pairs, rng: jax.Array,
             frozen: Any, step_counts: Tuple[int, ...], post: Optional[Callable] = None,
             last: Optional[jax.Array] = None):
  """IS adaptation on ``support`` for max(step_counts) steps; returns ``post`` (default:
  identity) of the query images [S, q, H, W, 3] after each of the S increasing
  ``step_counts`` (no dropout). Step k's dropout is ``fold_in(rng, k)``, so the images
  after s steps equal those of :func:`adapt_and_generate` with an s-step loop.

  ``last`` (an int32 scalar, may be traced): run only up to ``step_counts[last]``; the
  steps after it are skipped (``lax.cond``, so they cost nothing outside ``vmap``) and
  their images are zeros. None: every count."""
  opt_state = gan.init_opt_state(loop.optimizer, params)
  carry, fakes, done = (params, opt_state), [], 0
  for i, s in enumerate(step_counts):

    def segment(c, first=done, num=s - done):
      p, o, _ = run_steps(loop, c[0], c[1], support, rng, frozen, first_step=first, num_steps=num)
      return (p, o), gan.generate(loop.spec, p["G"], query, rng, train=False)

    if last is None or i == 0:
      carry, fake = segment(carry)
    else:
      zeros = jnp.zeros_like(fakes[0])
      carry, fake = jax.lax.cond(i <= last, segment, lambda c: (c, zeros), carry)
    done = s
    fakes.append(fake)
  fakes = jnp.stack(fakes)
  return fakes if post is None else post(fakes)
