"""Pieces the benchmark's parent process and its workers share.

* :class:`EstimatorSpec` and :func:`parse_estimators`: the ``--estimators`` flag,
  ``"second_order,truncated:backprop_steps=2,es:pairs=16,sigma=0.02"``.
* :func:`config_to_json` / :func:`config_from_json`: a config travels to a fresh worker
  process (and to ``bil_jax.main`` runs) as JSON.
* :func:`ensure_perceptual_weights`: a random LPIPS-VGG file when the config's perceptual
  term is on but ``loss.vgg_weights`` is empty (costs are real, loss values are not).
* :func:`random_tasks`: random episodes of the config's shapes (for timing).
"""
import dataclasses
import json
import os
from typing import List

import ml_collections
import numpy as np

# Estimators that do not differentiate through the unrolled adaptation: remat cannot
# change their step (timed once, with the first remat mode asked for).
NO_UNROLL_BACKPROP = ("first_order", "reptile", "es", "implicit")
RANDOM_WEIGHTS_FILE = "random_lpips_vgg.msgpack"


@dataclasses.dataclass(frozen=True)
class EstimatorSpec:
  """One estimator of ``--estimators``: its name and ``"k=v,..."`` options."""
  name: str
  options: str = ""

  @property
  def label(self) -> str:
    """'truncated(backprop_steps=2)' or 'second_order'."""
    return f"{self.name}({self.options})" if self.options else self.name

  @property
  def backprops_unroll(self) -> bool:
    return self.name not in NO_UNROLL_BACKPROP


def parse_estimators(text: str) -> List[EstimatorSpec]:
  """``--estimators`` -> [EstimatorSpec]; validates names and options (one-line errors).

  Items are comma separated. ``name`` or ``name:k=v`` starts an estimator (``name`` may be
  ``package.module:function``); an item ``k=v`` (no ':' before its '=') adds an option to
  the estimator before it: ``es:pairs=16,sigma=0.02,truncated:backprop_steps=1``.
  """
  from bil_jax import estimators  # pylint: disable=import-outside-toplevel
  specs: list = []
  for item in (t.strip() for t in str(text).split(",")):
    if not item:
      continue
    head = item.split("=", 1)[0]
    if "=" in item and ":" not in head:
      if not specs:
        raise ValueError(f"--estimators: option {item!r} comes before any estimator name")
      last = specs[-1]
      specs[-1] = EstimatorSpec(last.name, f"{last.options},{item}" if last.options else item)
      continue
    name, opts = item, ""
    if "=" in item:
      name = head.rsplit(":", 1)[0]
      opts = item[len(name) + 1:]
    specs.append(EstimatorSpec(name, opts))
  if not specs:
    raise ValueError("--estimators is empty")
  for s in specs:
    try:
      estimators.resolve(s.name, s.options)
    except ValueError as e:
      raise ValueError(f"--estimators {s.label}: {e}") from None
  labels = [s.label for s in specs]
  if len(set(labels)) != len(labels):
    raise ValueError(f"--estimators names an estimator twice: {labels}")
  return specs


def config_to_json(config: ml_collections.ConfigDict) -> str:
  return config.to_json(sort_keys=True)


def _tuples(value):
  """JSON arrays back to the tuples they were (configs hold tuples, never lists)."""
  if isinstance(value, dict):
    return {k: _tuples(v) for k, v in value.items()}
  if isinstance(value, list):
    return tuple(_tuples(v) for v in value)
  return value


def config_from_json(text: str) -> ml_collections.ConfigDict:
  """The locked ConfigDict of :func:`config_to_json`'s text; ``data.config_seed`` is again
  a reference to ``seed`` (as in config_lib.base_config)."""
  c = ml_collections.ConfigDict(_tuples(json.loads(text)))
  if "data" in c and "config_seed" in c.data:
    c.data.config_seed = c.get_ref("seed")
  c.lock()
  return c


def set_key(config: ml_collections.ConfigDict, dotted: str, value) -> None:
  """``config.a.b = value`` for ``dotted='a.b'``; a one-line error for an unknown key."""
  *path, last = dotted.split(".")
  node = config
  for p in path:
    node = node[p]
  if last not in node:
    raise KeyError(f"config has no key {dotted!r}")
  with node.unlocked():
    node[last] = value


def perceptual_needs_weights(config) -> bool:
  return bool(config.loss.lambda_b) and not config.loss.vgg_weights


def ensure_perceptual_weights(config, out_dir: str, seed: int = 0) -> str:
  """When L_P is on (lambda_b > 0) and ``loss.vgg_weights`` is empty, writes a randomly
  initialised LPIPS-VGG file (VGG16 widths, official shapes, so both ``lpips_vgg`` and
  ``vgg_mse`` read it) to OUT and points ``config.loss.vgg_weights`` at it.

  Returns a message for the output ('' when nothing was done).
  """
  if not perceptual_needs_weights(config):
    return ""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from flax import serialization  # pylint: disable=import-outside-toplevel
  from bil_jax.models import lpips  # pylint: disable=import-outside-toplevel
  path = os.path.abspath(os.path.join(out_dir, RANDOM_WEIGHTS_FILE))
  if not os.path.isfile(path):
    x = jnp.zeros((1, 32, 32, 3), jnp.float32)
    variables = jax.jit(lpips.LPIPS(net="vgg").init)(jax.random.PRNGKey(seed), x, x)
    from bil_jax import io_utils  # pylint: disable=import-outside-toplevel
    io_utils.write_atomic(path, serialization.msgpack_serialize(jax.device_get(variables)))
  set_key(config, "loss.vgg_weights", path)
  return (f"loss.lambda_b={config.loss.lambda_b} but loss.vgg_weights is empty: using a "
          f"randomly initialised LPIPS-VGG (VGG16 shapes) written to {path}; the perceptual "
          f"term's cost is real, its values are not")


def random_tasks(config, meta_batch: int, seed: int = 0) -> dict:
  """Random episodes {'support', 'query'} with a leading [M] axis: maps [M,n,H,W] int32,
  images and references [M,n,H,W,3] in [-1, 1] (the values do not matter for timing)."""
  rng = np.random.default_rng(seed)
  h, w = int(config.data.image_height), int(config.data.image_width)
  nc = int(config.data.num_classes)

  def pairs(n):
    return {
        "map": rng.integers(0, nc, (meta_batch, n, h, w)).astype(np.int32),
        "image": rng.uniform(-1, 1, (meta_batch, n, h, w, 3)).astype(np.float32),
        "ref": rng.uniform(-1, 1, (meta_batch, n, h, w, 3)).astype(np.float32)
    }

  return {"support": pairs(int(config.data.shots)), "query": pairs(int(config.data.queries))}
