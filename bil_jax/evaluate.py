"""Test phase (Alg. 2) and the paper's ablation table (Tables 1-3).

For every test (unseen) task T_uns with support set T_uns^(tr) (n shots) and query set
T_uns^(te) (``data.eval_queries`` pairs, not augmented), five models generate the query
images:

  X                        the conventional model (pre-training checkpoint), no adaptation
  X (n-shot)               X after IS adaptation on the n shots
  BiL-X w/o Aux (n-shot)   the meta-trained GP after IS adaptation on the n shots
  BiL-X (n-shot)           the GP fine-tuned on the K auxiliary tasks retrieved by Eq. 3
                           (Alg. 2 lines 2-4), then IS adaptation on the n shots
  BiL-X (GP)               the meta-trained GP, no adaptation

IS adaptation is ``eval.is_steps`` GAN updates (Sec. 5.3: 20) with the inner optimizer of
``config.meta``. Aux fine-tuning runs ``eval.aux_steps`` meta-steps (Alg. 1 lines 6-22)
whose meta-batch is the K auxiliary tasks, starting from the GP with a fresh outer Adam.

Metrics (``bil_jax.metrics``): SSIM and PSNR on images mapped to [0, 1], MSE on [-1, 1],
LPIPS (AlexNet, v0.1) on [-1, 1] when ``eval.lpips_weights`` is set, else ``null`` /
``n/a``. Each is averaged over the query pairs of a task, then over tasks.

Outputs in ``WORKDIR/eval/``: ``results.json``
(``{"rows": {name: {"lpips", "ssim", "mse", "psnr"}}, "config": {...}, ...}``),
``results.md`` (a Markdown table) and ``samples.png`` (Fig. 3 layout: input, X (n-shot),
BiL w/o Aux, BiL, ground truth, GP output).
"""
import json
import logging
import os
import time
from typing import Dict, List

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from bil_jax import adapt, builders, gan, meta, metrics, parallel, retrieval, visualize
from bil_jax.data import episodes, loading

EVAL_STREAM, AUX_STREAM = 4, 5
METRIC_KEYS = ("lpips", "ssim", "mse", "psnr")
DISPLAY_NAMES = {"pix2pix": "Pix2pix", "pg2": "PG2"}


def row_names(model_name: str, shots: int) -> Dict[str, str]:
  """The five ablation rows for model X with n shots, keyed by a short id."""
  x = DISPLAY_NAMES.get(model_name, model_name)
  return {"x": x, "x_nshot": f"{x} ({shots}-shot)",
          "bil_noaux": f"BiL-{x} w/o Aux ({shots}-shot)",
          "bil": f"BiL-{x} ({shots}-shot)", "gp": f"BiL-{x} (GP)"}


def load_params(workdir: str, phase: str) -> dict:
  """{'G', 'D'} of the newest readable checkpoint of ``WORKDIR/phase``; one-line error if none."""
  directory = os.path.abspath(os.path.join(workdir, phase, "checkpoints"))
  steps = sorted(ocp.CheckpointManager(directory).all_steps()) if os.path.isdir(directory) else []
  for step in reversed(steps):
    try:
      state = ocp.CheckpointManager(directory).restore(step)
      return jax.tree.map(jnp.asarray, state["params"])
    except Exception as e:  # pylint: disable=broad-except
      logging.warning("checkpoint %s/%d unreadable (%s); trying the previous one", directory,
                      step, type(e).__name__)
  mode = "pretrain" if phase == "pretrain" else "metatrain"
  raise FileNotFoundError(f"no {phase} checkpoint in {directory}; run --mode={mode} first")


def test_episodes(config, test_tasks) -> List[dict]:
  """One fixed episode per evaluated test task: n support shots, eval_queries queries."""
  n = test_tasks.num_tasks if config.eval.num_test_tasks < 0 else min(
      config.eval.num_test_tasks, test_tasks.num_tasks)
  return [episodes.sample_episode(
      test_tasks, t, config.data.shots, config.data.eval_queries,
      episodes.episode_rng(config.seed, t, EVAL_STREAM), config.data.augment,
      augment_query=False, reuse_pairs=bool(config.data.reuse_pairs)) for t in range(n)]


def retrieve_aux_tasks(support_maps: np.ndarray, train_tasks, k: int) -> np.ndarray:
  """Eq. 3: the k training tasks most similar to the support maps [n,H,W], best first."""
  sims = retrieval.task_similarity(
      support_maps, train_tasks.maps,
      retrieval.task_ids_from_offsets(train_tasks.offsets), train_tasks.num_classes,
      num_tasks=train_tasks.num_tasks)
  return retrieval.top_k_tasks(sims, k)


class _Programs:
  """The jitted pieces of the test phase, compiled once and reused for every task."""

  def __init__(self, config, spec, frozen, lpips_params):
    self.spec, self.frozen, self.lpips_params = spec, frozen, lpips_params
    is_loop = builders.inner_loop(config, spec, steps=int(config.eval.is_steps))
    self.adapt_generate = jax.jit(
        lambda p, s, q, r: adapt.adapt_and_generate(is_loop, p, s, q, r, frozen)[0])
    self.generate = jax.jit(
        lambda p, q: gan.generate(spec, p["G"], q, jax.random.PRNGKey(0), train=False))
    self.score = jax.jit(lambda a, b: metrics.image_metrics(a, b, lpips_params))
    aux_loop = builders.inner_loop(config, spec)
    aux_lr = config.eval.aux_lr if config.eval.aux_lr >= 0 else config.meta.outer_lr
    self.aux_opt = meta.make_outer_optimizer(aux_lr, config.optim.b1, config.optim.b2)
    mesh = parallel.make_mesh(jax.local_devices()[:1])
    self.aux_step = meta.make_meta_step(
        aux_loop, config.eval.aux_estimator or config.meta.estimator, self.aux_opt, mesh)

  def aux_finetune(self, config, params, train_tasks, aux_indices, task_index):
    """Alg. 2 lines 2-4: alternating BiL updates of the GP on the auxiliary tasks."""
    opt_state = self.aux_opt.init(params)
    key = jax.random.fold_in(jax.random.PRNGKey(config.seed), 1000 + task_index)
    for step in range(int(config.eval.aux_steps)):
      batch = episodes.sample_meta_batch(
          train_tasks, len(aux_indices), config.data.shots, config.data.queries,
          episodes.episode_rng(config.seed, task_index * 100_003 + step, AUX_STREAM),
          config.data.augment, task_indices=list(aux_indices),
          reuse_pairs=bool(config.data.reuse_pairs))
      rngs = meta.task_rngs(key, step, len(aux_indices))
      params, opt_state, _ = self.aux_step(params, opt_state, batch, rngs, self.frozen)
    return params


def _mean_rows(per_task: Dict[str, List[dict]]) -> Dict[str, dict]:
  """Averages per-task metric dicts; 'lpips' is None when it was not computed."""
  rows = {}
  for name, scores in per_task.items():
    rows[name] = {k: (float(np.mean([s[k] for s in scores])) if k in scores[0] else None)
                  for k in METRIC_KEYS}
  return rows


def markdown_table(rows: Dict[str, dict]) -> str:
  """The ablation table in the layout of the paper's Tables 1-3."""
  lines = ["| Model | LPIPS↓ | SSIM↑ | MSE↓ | PSNR↑ |", "|---|---|---|---|---|"]
  for name, r in rows.items():
    lp = "n/a" if r["lpips"] is None else f"{r['lpips']:.3f}"
    lines.append(f"| {name} | {lp} | {r['ssim']:.3f} | {r['mse']:.3f} | {r['psnr']:.3f} |")
  return "\n".join(lines) + "\n"


def _write_atomic(path: str, text: str) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.write(text)
  os.replace(tmp, path)


def evaluate(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, dict]:
  """Runs Alg. 2 on the test tasks and writes the ablation table; returns its rows."""
  from bil_jax.models import lpips as lpips_lib  # pylint: disable=g-import-not-at-top
  t0 = time.time()
  train_tasks, test_tasks = loading.load_data(config, workdir)
  spec = builders.build_spec(config, train_tasks.num_classes)
  frozen = builders.load_frozen(config)
  lpips_params = (lpips_lib.load_lpips_params(config.eval.lpips_weights)
                  if config.eval.lpips_weights else None)
  x_params = load_params(workdir, "pretrain")
  gp_params = load_params(workdir, "meta")
  progs = _Programs(config, spec, frozen, lpips_params)
  names = row_names(config.model.name, config.data.shots)
  eps = test_episodes(config, test_tasks)

  per_task = {name: [] for name in names.values()}
  grid_cols = {k: [] for k in ("input", "x_nshot", "bil_noaux", "bil", "target", "gp")}
  aux_log = []
  for t, ep in enumerate(eps):
    rng = jax.random.fold_in(jax.random.PRNGKey(config.seed), 2_000_000 + t)
    support, query = ep["support"], ep["query"]
    aux = retrieve_aux_tasks(support["map"], train_tasks, int(config.eval.aux_tasks))
    aux_log.append({"task": test_tasks.names[t],
                    "aux_tasks": [train_tasks.names[i] for i in aux]})
    tuned = progs.aux_finetune(config, gp_params, train_tasks, aux, t)
    fakes = {
        "x": progs.generate(x_params, query),
        "x_nshot": progs.adapt_generate(x_params, support, query, rng),
        "bil_noaux": progs.adapt_generate(gp_params, support, query, rng),
        "bil": progs.adapt_generate(tuned, support, query, rng),
        "gp": progs.generate(gp_params, query),
    }
    for key, fake in fakes.items():
      per_task[names[key]].append(
          {k: float(np.mean(v)) for k, v in progs.score(fake, query["image"]).items()})
    if t < config.eval.grid_tasks:
      for key in ("x_nshot", "bil_noaux", "bil", "gp"):
        grid_cols[key].append(np.asarray(fakes[key][:2]))
      grid_cols["input"].append(visualize.colorize(query["map"][:2], spec.num_classes))
      grid_cols["target"].append(query["image"][:2])
    logging.info("evaluated test task %d/%d (%s)", t + 1, len(eps), test_tasks.names[t])

  rows = _mean_rows(per_task)
  out = os.path.join(workdir, "eval")
  os.makedirs(out, exist_ok=True)
  result = {"rows": rows, "config": config.to_dict(), "num_test_tasks": len(eps),
            "queries_per_task": int(config.data.eval_queries), "seed": int(config.seed),
            "aux_retrieval": aux_log, "seconds": time.time() - t0}
  _write_atomic(os.path.join(out, "results.json"), json.dumps(result, indent=1, default=str))
  _write_atomic(os.path.join(out, "results.md"), markdown_table(rows))
  if grid_cols["input"]:
    order = ("input", "x_nshot", "bil_noaux", "bil", "target", "gp")
    visualize.save_png(os.path.join(out, "samples.png"), visualize.grid(
        [np.concatenate(grid_cols[k]) for k in order]))
  logging.info("ablation table (%d test tasks):\n%s", len(eps), markdown_table(rows))
  return rows
