"""Test phase (Alg. 2) and the paper's ablation table (Tables 1-3).

For every test (unseen) task T_uns with support set T_uns^(tr) (n shots) and query set
T_uns^(te) (``data.eval_queries`` pairs), five models generate the query images. Shots and
queries are the task's raw pairs (``eval.augment_shots=True`` augments the shots as in
training); Eq. 3 retrieval compares the raw support maps.

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

Outputs in ``WORKDIR/eval/``: ``results.json`` with
``"rows"`` (``{name: {"lpips", "ssim", "mse", "psnr"}}``, means over tasks),
``"per_task"`` (``{name: {metric: [value per test task]}}``, in the order of ``"task_names"``),
``"row_ids"`` (``{"x", "x_nshot", "bil_noaux", "bil", "gp"} -> name``), ``"summary"``
(bootstrap intervals and paired differences, :mod:`bil_jax.report`) and ``"config"``;
``results.md`` (the table with 95% bootstrap intervals over tasks, then the paired differences
behind the paper's claims with Wilcoxon p-values) and ``samples.png`` (Fig. 3 layout).
``python -m bil_jax.report DIR ...`` pools several seeds.
"""
import json
import logging
import os
import time
from typing import Dict, List, Tuple

import jax
import jax.numpy as jnp
import ml_collections
from clu import metric_writers, periodic_actions
import numpy as np

from bil_jax import (adapt, builders, checkpoint, gan, io_utils, meta, metrics, parallel, report,
                     retrieval, streams, visualize)
from bil_jax.data import episodes, loading

GRID_COLUMNS = ("map", "target", "x", "x_nshot", "bil_noaux", "bil", "gp")
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
  return jax.tree.map(jnp.asarray, checkpoint.phase_params(workdir, phase))


def test_episodes(config, test_tasks) -> List[dict]:
  """One fixed episode per evaluated test task: n support shots, eval_queries queries.

  Queries are the task's raw pairs. So are the support shots, unless ``eval.augment_shots``
  (then flipped/cropped/rotated as in training). 'support_maps' int32 [n,H,W] are the raw
  support maps either way: Eq. 3 retrieval uses them. PG² references are made as in
  training (Sec. 5.3).
  """
  n = test_tasks.num_tasks if config.eval.num_test_tasks < 0 else min(
      config.eval.num_test_tasks, test_tasks.num_tasks)
  sampler = episodes.Sampler.from_config(config.data)
  eps = []
  for t in range(n):
    ep = sampler.eval_episode(test_tasks, t, streams.episode_rng(config.seed, "eval", t))
    # eval_episode draws the split first, so the same generator state gives its indices.
    sup, _ = sampler.eval_split(test_tasks, t, streams.episode_rng(config.seed, "eval", t))
    ep["support_maps"] = test_tasks.task_maps(t)[sup].astype(np.int32)
    if not config.eval.augment_shots:
      ep["support"] = dict(ep["support"], map=ep["support_maps"],
                           image=episodes.to_float(test_tasks.task_images(t)[sup]))
    eps.append(ep)
  return eps


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
    self.aux_opt = builders.aux_optimizer(config)
    mesh = parallel.make_mesh(jax.local_devices()[:1])
    # Aux fine-tuning uses meta.estimator (with its options) unless eval.aux_estimator
    # names another one.
    aux_estimator = config.eval.aux_estimator or config.meta.estimator
    self.aux_step = meta.make_meta_step(
        aux_loop, aux_estimator, self.aux_opt, mesh,
        "" if config.eval.aux_estimator else config.meta.estimator_options)
    self.sampler = episodes.Sampler.from_config(config.data)

  def aux_finetune(self, config, params, train_tasks, aux_indices, task_index):
    """Alg. 2 lines 2-4: alternating BiL updates of the GP on the auxiliary tasks."""
    opt_state = self.aux_opt.init(params)
    key = streams.key(config.seed, "aux", task_index)
    for step in range(int(config.eval.aux_steps)):
      batch = self.sampler.meta_batch(
          train_tasks, len(aux_indices),
          streams.episode_rng(config.seed, "aux", streams.aux_step(task_index, step)),
          task_indices=list(aux_indices))
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


def task_outputs(progs, config, x_params, gp_params, train_tasks, ep: dict,
                 t: int) -> Tuple[Dict[str, jax.Array], np.ndarray]:
  """Alg. 2 on test episode ``ep`` (task index t): each row's query images [q,H,W,3], keyed
  like :func:`row_names`, and the retrieved auxiliary task indices [K].

  X and GP generate directly; X (n-shot) and BiL w/o Aux adapt X and the GP on the shots;
  BiL adapts the GP after Aux fine-tuning on the tasks Eq. 3 retrieves for the raw shots.
  """
  rng = streams.key(config.seed, "eval", t)
  support, query = ep["support"], ep["query"]
  aux = retrieve_aux_tasks(ep["support_maps"], train_tasks, int(config.eval.aux_tasks))
  tuned = progs.aux_finetune(config, gp_params, train_tasks, aux, t)
  return {
      "x": progs.generate(x_params, query),
      "x_nshot": progs.adapt_generate(x_params, support, query, rng),
      "bil_noaux": progs.adapt_generate(gp_params, support, query, rng),
      "bil": progs.adapt_generate(tuned, support, query, rng),
      "gp": progs.generate(gp_params, query),
  }, aux


def per_task_values(per_task: Dict[str, List[dict]]) -> Dict[str, Dict[str, List[float]]]:
  """{row: [metrics of task t]} -> {row: {metric: [value per task, in task order]}}."""
  return {name: {k: [s[k] for s in scores] for k in METRIC_KEYS if k in scores[0]}
          for name, scores in per_task.items()}


def markdown_table(rows: Dict[str, dict]) -> str:
  """The ablation table in the layout of the paper's Tables 1-3."""
  lines = ["| Model | LPIPS↓ | SSIM↑ | MSE↓ | PSNR↑ |", "|---|---|---|---|---|"]
  for name, r in rows.items():
    lp = "n/a" if r["lpips"] is None else f"{r['lpips']:.3f}"
    lines.append(f"| {name} | {lp} | {r['ssim']:.3f} | {r['mse']:.3f} | {r['psnr']:.3f} |")
  return "\n".join(lines) + "\n"


def write_summaries(writer, config, summary: dict, table: str, row_ids: Dict[str, str]) -> None:
  """TensorBoard: hyperparameters, '<row id>/<metric>' means (and 95% interval ends),
  'diff/<a>-<b>/<metric>' paired differences, and the Markdown table as text (step 0)."""
  ids = {name: key for key, name in row_ids.items()}
  scalars = {}
  for name, row in summary["rows"].items():
    for m, s in row.items():
      scalars.update({f"{ids[name]}/{m}": s["mean"], f"{ids[name]}/{m}_ci_low": s["ci_low"],
                      f"{ids[name]}/{m}_ci_high": s["ci_high"]})
  for d in summary["differences"]:
    scalars[f"diff/{d['claim']}/{d['metric']}"] = d["mean"]
  flat = report.flatten(json.loads(config.to_json_best_effort()))
  writer.write_hparams({k: v if isinstance(v, (bool, int, float, str)) else str(v)
                        for k, v in flat.items()})
  writer.write_scalars(0, scalars)
  writer.write_texts(0, {"results": table})
  writer.flush()


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

  out = os.path.join(workdir, "eval")
  writer = metric_writers.create_default_writer(out,
                                                just_logging=not parallel.is_main_process())
  progress = periodic_actions.ReportProgress(num_train_steps=len(eps), every_steps=1,
                                             every_secs=None)
  per_task = {name: [] for name in names.values()}
  grid_cols = {k: [] for k in GRID_COLUMNS}
  aux_log = []
  for t, ep in enumerate(eps):
    query = ep["query"]
    fakes, aux = task_outputs(progs, config, x_params, gp_params, train_tasks, ep, t)
    aux_log.append({"task": test_tasks.names[t],
                    "aux_tasks": [train_tasks.names[i] for i in aux]})
    for key, fake in fakes.items():
      per_task[names[key]].append(
          {k: float(np.mean(v)) for k, v in progs.score(fake, query["image"]).items()})
    if t < config.eval.grid_tasks:
      for key in names:
        grid_cols[key].append(np.asarray(fakes[key][:2]))
      grid_cols["map"].append(visualize.colorize(query["map"][:2], spec.num_classes))
      grid_cols["target"].append(query["image"][:2])
    logging.info("evaluated test task %d/%d (%s)", t + 1, len(eps), test_tasks.names[t])
    progress(t + 1)

  rows = _mean_rows(per_task)
  values = per_task_values(per_task)
  row_ids = dict(names)
  summary = report.run_summary(values, row_ids)
  result = {"rows": rows, "per_task": values, "task_names": list(test_tasks.names[:len(eps)]),
            "row_ids": row_ids, "summary": summary, "config": config.to_dict(),
            "num_test_tasks": len(eps),
            "queries_per_task": int(config.data.eval_queries), "seed": int(config.seed),
            "aux_retrieval": aux_log, "seconds": time.time() - t0}
  write_summaries(writer, config, summary, report.run_markdown(summary), row_ids)
  if parallel.is_main_process():  # every process computed the same table
    io_utils.write_atomic(os.path.join(out, "results.json"),
                          json.dumps(result, indent=1, default=str))
    io_utils.write_atomic(os.path.join(out, "results.md"), report.run_markdown(summary))
    if grid_cols["map"]:
      labels = {"map": "map", "target": "target", **names}
      visualize.save_png(os.path.join(out, "samples.png"), visualize.labeled_grid(
          [np.concatenate(grid_cols[k]) for k in GRID_COLUMNS],
          [labels[k] for k in GRID_COLUMNS], min_width=96, pad=4))
  logging.info("ablation table (%d test tasks):\n%s", len(eps), markdown_table(rows))
  return rows
