"""Tiny smooth G and D and random episodes for the meta-gradient tests (not a test file)."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from bil_jax import adapt, gan, optimizers
from bil_jax.models import batch_split, layers

C, H, W = 3, 4, 4


class TinyG(nn.Module):
  """x [B,H,W,Cin] -> tanh image [B,H,W,3]; smooth everywhere (for finite differences)."""

  @nn.compact
  def __call__(self, x, train=True):
    h = jnp.tanh(nn.Conv(4, (3, 3))(x))
    return jnp.tanh(nn.Conv(3, (1, 1))(h))


class TinyD(nn.Module):
  """(structure, image) -> logits [B,H/2,W/2,1]."""

  @nn.compact
  def __call__(self, s, y):
    h = jnp.tanh(nn.Conv(4, (3, 3), strides=(2, 2))(jnp.concatenate([s, y], -1)))
    return nn.Conv(1, (1, 1))(h)


class TinyNormG(nn.Module):
  """TinyG with batch norm and dropout, the layers that see a batch split over devices."""

  @nn.compact
  def __call__(self, x, train=True):
    h = jnp.tanh(layers.Norm("batch")(nn.Conv(4, (3, 3))(x)))
    h = batch_split.Dropout(0.25, deterministic=not train)(h)
    return jnp.tanh(nn.Conv(3, (1, 1))(h))


class TinyNormD(nn.Module):
  """TinyD with batch norm."""

  @nn.compact
  def __call__(self, s, y):
    h = nn.Conv(4, (3, 3), strides=(2, 2))(jnp.concatenate([s, y], -1))
    return nn.Conv(1, (1, 1))(jnp.tanh(layers.Norm("batch")(h)))


def spec(lambda_a=0.5, gan_mode="bce", norm=False):
  """The tiny GAN; ``norm``: with batch norm (G and D) and dropout (G)."""
  g, d = (TinyNormG(), TinyNormD()) if norm else (TinyG(), TinyD())
  return gan.GanSpec(g, d, num_classes=C, uses_reference=False, lambda_a=lambda_a,
                     gan_mode=gan_mode)


def init_params(sp, seed=0, dtype=jnp.float32):
  k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
  x = jnp.zeros((1, H, W, C))
  params = {
      "G": sp.generator.init(k1, x)["params"],
      "D": sp.discriminator.init(k2, x, jnp.zeros((1, H, W, 3)))["params"]
  }
  return jax.tree.map(lambda a: a.astype(dtype), params)


def pairs(rng, n, dtype=np.float32):
  return {
      "map": rng.integers(0, C, (n, H, W)).astype(np.int32),
      "image": rng.uniform(-1, 1, (n, H, W, 3)).astype(dtype),
      "ref": rng.uniform(-1, 1, (n, H, W, 3)).astype(dtype)
  }


def task(seed, shots=2, queries=2, dtype=np.float32):
  rng = np.random.default_rng(seed)
  return {"support": pairs(rng, shots, dtype), "query": pairs(rng, queries, dtype)}


def meta_batch(seeds, dtype=np.float32, shots=2, queries=2):
  tasks = [task(s, shots, queries, dtype=dtype) for s in seeds]
  return jax.tree.map(lambda *xs: np.stack(xs), *tasks)


# Keyword arguments of the inner optimizers by name (Adam: the paper's, as in the configs).
INNER_KWARGS = {"adam": dict(b1=0.5, b2=0.999, eps_root=1e-12)}


def loop(sp, optimizer="sgd", lr=0.1, steps=2, remat=False, **kwargs):
  """An InnerLoop whose optimizer is an optax name (+ kwargs) or a transformation."""
  if isinstance(optimizer, str):
    kwargs = dict(INNER_KWARGS.get(optimizer, {}), **kwargs)
    optimizer = optimizers.from_spec(dict(name=optimizer, lr=lr, **kwargs), "tiny.loop")
  opt = optimizer
  return adapt.InnerLoop(sp, opt, steps, remat)


def problem64(optimizer="sgd", lr=0.1, steps=2, seed=1, task_seed=3, rng_seed=0, lambda_a=0.5,
              **kwargs):
  """A float64 meta-gradient problem: (spec, loop, params, task, rng). Call it under
  ``jax.enable_x64(True)``."""
  sp = spec(lambda_a=lambda_a)
  lp = loop(sp, optimizer, lr=lr, steps=steps, **kwargs)
  params = init_params(sp, seed=seed, dtype=jnp.float64)
  return sp, lp, params, task(task_seed, dtype=np.float64), jax.random.PRNGKey(rng_seed)


def assert_matches_directional_fd(f, grads, params, eps, rtol, nets=("G", "D"), seed=0):
  """For each net, <grads[net], v> equals central differences of f(theta)[which] along a
  random direction v of that net (which: 0 for G, 1 for D). ``f`` takes the raveled
  ``params``; returns nothing, asserts."""
  from jax.flatten_util import ravel_pytree  # pylint: disable=g-import-not-at-top
  flat, _ = ravel_pytree(params)
  vrng = np.random.default_rng(seed)
  for net in nets:
    which = 0 if net == "G" else 1
    v = jax.tree.map(jnp.zeros_like, params)
    v[net] = jax.tree.map(lambda a: jnp.asarray(vrng.normal(size=a.shape), a.dtype), params[net])
    vflat = ravel_pytree(v)[0]
    fd = (f(flat + eps * vflat)[which] - f(flat - eps * vflat)[which]) / (2 * eps)
    analytic = ravel_pytree(grads[net])[0] @ ravel_pytree(v[net])[0]
    assert abs(fd - analytic) <= rtol * max(abs(fd), 1e-3), (net, fd, analytic)
