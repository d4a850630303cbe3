"""A design screen on validation tasks only: the lookups against X (n-shot) over an IS grid.

  python -m bil_jax.screen --config=configs/synthetic.py --workdir=DIR [--phase=pretrain]

for a workdir whose ``--phase`` (pretrain, xplus or meta) has a checkpoint. It reads the
training and validation splits only (never test), draws each validation task's episode as
the tuning does (``streams.VAL_TASK_OFFSET``), adapts the phase's parameters on the n shots
at every (learning rate, step count) of ``--lrs`` x ``--steps`` with the config's IS
optimizer, and prints the mean query SSIM of each grid point and of each lookup
(:mod:`bil_jax.lookups`), per condition (seen, unseen families) and over all, with the
ratio of the best grid point to the best lookup. Use it to decide a dataset's or a
config's settings before a test task is read.
"""
import sys
from typing import Dict, List, Sequence

import numpy as np

from bil_jax import cli

PHASES = ("pretrain", "xplus", "meta")


def lookup_scores(eps: List[dict]) -> Dict[str, np.ndarray]:
  """{lookup: query SSIM [V]} of each validation episode (host numpy predictions)."""
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from bil_jax import lookups, metrics  # pylint: disable=import-outside-toplevel
  out = {k: [] for k in lookups.PREDICTORS}
  for ep in eps:
    query = ep["query"]
    maps = np.asarray(query["map"])
    maps = maps.argmax(-1) if maps.ndim == 4 else maps
    preds = lookups.predict_all(ep["support_maps"], ep["support_images"], maps)
    for k, pred in zip(lookups.PREDICTORS, preds):
      out[k].append(float(metrics.ssim(jnp.asarray(pred), jnp.asarray(query["image"])).mean()))
  return {k: np.asarray(v) for k, v in out.items()}


def grid_scores(config, workdir: str, phase: str, val_tasks, eps: List[dict], lrs: Sequence[float],
                steps: Sequence[int]) -> np.ndarray:
  """Query SSIM [V, L, S] of ``phase``'s parameters after IS adaptation at each learning
  rate L and step count S (one compiled adaptation of max(steps); lr is its input)."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from bil_jax import adapt, builders, checkpoint, metrics, streams  # pylint: disable=import-outside-toplevel
  spec = builders.build_spec(config, val_tasks.num_classes)
  params = jax.tree.map(jnp.asarray, checkpoint.phase_params(workdir, phase))
  frozen = builders.load_frozen(config)
  counts = tuple(sorted(set(int(s) for s in steps)))

  @jax.jit
  def run(p, lr, support, query, rng):
    loop = builders.inner_loop(config, spec, steps=max(counts), lr=lr)
    post = lambda f: jax.vmap(lambda x: metrics.ssim(x, query["image"]).mean())(f)  # pylint: disable=unnecessary-lambda-assignment
    return adapt.adapt_at(loop, p, support, query, rng, frozen, counts, post)

  return np.stack([
      np.stack([
          np.asarray(
              run(params, jnp.float32(lr), ep["support"], ep["query"],
                  streams.key(config.seed, "eval", streams.VAL_TASK_OFFSET + t))) for lr in lrs
      ]) for t, ep in enumerate(eps)
  ])


def table(names: Sequence[str], lookup: Dict[str, np.ndarray], grid: np.ndarray,
          lrs: Sequence[float], steps: Sequence[int]) -> str:
  """Markdown: one line per lookup and grid point, one column per condition, and the ratio
  of the best grid point to the best lookup (on all tasks)."""
  from bil_jax.data import tasks as tasks_lib  # pylint: disable=import-outside-toplevel
  conds = [tasks_lib.task_condition(n) for n in names]
  cols = [c for c in ("seen", "unseen") if c in conds] + ["all"]
  sel = {c: np.asarray([c == "all" or k == c for k in conds]) for c in cols}
  lines = [
      "| predictor | " + " | ".join(f"{c} ({sel[c].sum()})" for c in cols) + " |",
      "|---|" + "---|" * len(cols)
  ]
  for k, v in lookup.items():
    lines.append(f"| {k} | " + " | ".join(f"{v[sel[c]].mean():.3f}" for c in cols) + " |")
  for i, lr in enumerate(lrs):
    for j, s in enumerate(sorted(set(int(x) for x in steps))):
      v = grid[:, i, j]
      lines.append(f"| IS lr {lr:g}, {s} steps | "
                   + " | ".join(f"{v[sel[c]].mean():.3f}" for c in cols) + " |")
  best_lookup = max(v.mean() for v in lookup.values())
  lines.append(f"\nbest grid point / best lookup (all): {grid.mean(0).max() / best_lookup:.3f}")
  return "\n".join(lines)


def main(argv) -> None:
  from absl import flags  # pylint: disable=import-outside-toplevel
  from bil_jax import console, streams  # pylint: disable=import-outside-toplevel
  from bil_jax.data import loading  # pylint: disable=import-outside-toplevel
  from bil_jax.eval_inputs import test_episodes  # pylint: disable=import-outside-toplevel
  del argv
  f = flags.FLAGS
  console.configure(f.verbosity)  # before TensorFlow, TFDS or a JAX backend is loaded
  config = f.config
  lrs, steps = [float(x) for x in f.lrs], [int(x) for x in f.steps]
  if not lrs or not steps or min(lrs) <= 0 or min(steps) < 1:
    cli.fail(f"--lrs={f.lrs} --steps={f.steps}: need learning rates > 0 and steps >= 1")
  data = loading.load_data(config, f.workdir, loading.TRAINING_SPLITS)
  num = data.val.num_tasks if f.num_val < 0 else min(f.num_val, data.val.num_tasks)
  eps = test_episodes(config, data.val, num, streams.VAL_TASK_OFFSET)
  grid = grid_scores(config, f.workdir, f.phase, data.val, eps, lrs, steps)
  print(f"{f.workdir} ({f.phase}), {num} validation tasks, query SSIM:")
  print(table(data.val.names[:num], lookup_scores(eps), grid, lrs, steps))


def run() -> None:
  """Entry point: ``python -m bil_jax.screen``."""
  from absl import app, flags  # pylint: disable=import-outside-toplevel
  cli.define_config_flag(sys.argv)
  flags.DEFINE_string("workdir", None, "A workdir with a checkpoint of --phase.", required=True)
  flags.DEFINE_enum("phase", "pretrain", PHASES, "Whose parameters are adapted.")
  flags.DEFINE_integer("num_val", 16, "Validation tasks scored (-1: all).")
  flags.DEFINE_list("lrs", ["1e-3", "3e-3", "1e-2"], "IS learning rates.")
  flags.DEFINE_list("steps", ["10", "20", "40", "80"], "IS step counts.")
  app.run(main, flags_parser=cli.parse_flags)


if __name__ == "__main__":
  run()
