"""How far bfloat16 convolutions (``model.dtype="bfloat16"``) move a meta-gradient.

  python -m bil_jax.bench.precision [--models=pix2pix,pg2] [--size=8]
      [--cases=grad:adam,first_order:sgd,second_order:sgd,first_order:adam,second_order:adam]

For each model and case (an estimator, or ``grad`` for the plain generator-loss gradient,
with the inner optimizer ``sgd`` (lr 0.01) or ``adam`` (the config's)), it computes the
float32 and the bfloat16 result on the same tiny random task and prints their cosine
similarity and relative error, separately for G and D, as a Markdown table.
"""
from typing import Dict, Tuple

import jax
import ml_collections
import numpy as np
from jax.flatten_util import ravel_pytree

from bil_jax import builders, config_lib, estimators, gan
from bil_jax.bench import fidelity


def tiny_config(model: str, dtype: str, inner: str, size: int) -> ml_collections.ConfigDict:
  """A size x size smoke config of ``model`` (ngf=ndf=4, 1 D layer, no dropout, K=2) whose
  convolutions run in ``dtype``; ``inner`` "sgd" (lr 0.01) or "adam" (the config's)."""
  c = config_lib.base_config()
  config_lib.make_smoke(c, height=size, width=size, pairs_per_task=4)
  c.model.name, c.model.dtype, c.model.d_layers, c.model.dropout = model, dtype, 1, 0.0
  c.model.ngf = c.model.ndf = 4
  c.meta.inner_steps = 2
  if inner == "sgd":
    c.meta.inner_optimizer = ml_collections.ConfigDict(dict(name="sgd", lr=0.01))
  return c


def random_task(num_classes: int, size: int, seed: int = 1) -> dict:
  """{'support', 'query'}: 2 random pairs each (map [2,S,S], image and ref [2,S,S,3])."""
  rng = np.random.default_rng(seed)

  def pairs(n):
    return {
        "map": rng.integers(0, num_classes, (n, size, size)).astype(np.int32),
        "image": rng.uniform(-1, 1, (n, size, size, 3)).astype(np.float32),
        "ref": rng.uniform(-1, 1, (n, size, size, 3)).astype(np.float32)
    }

  return {"support": pairs(2), "query": pairs(2)}


def gradient(model: str, dtype: str, case: str, inner: str, size: int = 8) -> dict:
  """{'G', 'D'} float32 gradient of ``case`` ('grad' or an estimator name) at the seed-0
  initialisation, on :func:`random_task`."""
  c = tiny_config(model, dtype, inner, size)
  spec = builders.build_spec(c, num_classes=c.data.num_classes)
  params = builders.init_params(spec, seed=0, hw=(size, size))
  task, rng = random_task(c.data.num_classes, size), jax.random.PRNGKey(0)
  if case == "grad":

    def loss(p, net):
      return gan.gan_losses(spec, p, task["query"], rng)["g_loss" if net == "G" else "d_loss"]

    return {net: jax.jit(jax.grad(loss), static_argnums=1)(params, net)[net] for net in ("G", "D")}
  loop = builders.inner_loop(c, spec)
  grads, _ = jax.jit(lambda p, t, r: estimators.get(case)(loop, p, t, r, None))(params, task, rng)
  return grads


def compare(full: dict, half: dict) -> Dict[str, Tuple[float, float]]:
  """net -> (cosine similarity, relative error ||half - full|| / ||full||), by
  :func:`bil_jax.bench.fidelity.compare`."""
  out = {}
  for net in ("G", "D"):
    row = lambda tree: ravel_pytree(tree)[0][None]  # [1, P]
    r = fidelity.compare(row(half[net]), row(full[net]))
    out[net] = (float(r["cosine"][0]), float(r["rel_error"][0]))
  return out


def _main(argv) -> None:
  from absl import flags  # pylint: disable=import-outside-toplevel
  if len(argv) > 1:
    raise SystemExit(f"error: unexpected arguments: {argv[1:]}")
  a = flags.FLAGS
  n = len(a.models.split(",")) * len(a.cases.split(","))
  print(
      f"expected: about {n * 30} s on a 2-core CPU ({n} cases, two small compiles each; "
      "rough); prints a Markdown table, writes no file", flush=True)
  print("| model | case | inner | cos G | rel. error G | cos D | rel. error D |")
  print("|---|---|---|---|---|---|---|")
  for model in a.models.split(","):
    for item in a.cases.split(","):
      case, inner = item.split(":")
      r = compare(gradient(model, "float32", case, inner, a.size),
                  gradient(model, "bfloat16", case, inner, a.size))
      print(
          f"| {model} | {case} | {inner} | {r['G'][0]:.5f} | {r['G'][1]:.4f} | "
          f"{r['D'][0]:.5f} | {r['D'][1]:.4f} |", flush=True)


def main() -> None:
  """``python -m bil_jax.bench.precision``: flags as in the module docstring."""
  from absl import app, flags  # pylint: disable=import-outside-toplevel
  flags.DEFINE_string("models", "pix2pix,pg2", "Models, comma separated.")
  flags.DEFINE_integer("size", 8, "Image size of the random task.")
  flags.DEFINE_string(
      "cases", "grad:adam,first_order:sgd,second_order:sgd,first_order:adam,"
      "second_order:adam", "CASE:INNER items: CASE 'grad' or an estimator, "
      "INNER 'sgd' or 'adam'.")
  app.run(_main)


if __name__ == "__main__":
  main()
