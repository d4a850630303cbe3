"""Conventional training (issue 2): learning, checkpoint round trip, the pretrain entry point."""
import functools
import glob
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
from PIL import Image

from bil_jax import builders, checkpoint, config_lib, gan
from tests import fixtures_datasets as fx

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
C, HW = 3, (16, 16)


def tiny_config():
  config = config_lib.base_config()
  config.data.num_classes = C
  config.data.image_height, config.data.image_width = HW
  config.model.ngf = config.model.ndf = 4
  config.model.d_layers = 2
  config.model.dropout = 0.0
  config.loss.lambda_b = 0.0
  config.loss.lambda_a = 0.05
  config.optim.lr = 2e-3
  return config


def fixed_batch(n=4):
  """Block maps and their class-coloured images in [-1, 1] (a learnable mapping)."""
  maps = np.stack([fx.block_map(*HW, range(C), seed=i) for i in range(n)]).astype(np.int32)
  images = fx.class_colour(maps).astype(np.float32) / 127.5 - 1
  return {"map": maps, "image": images, "ref": images}


def test_a_few_steps_lower_l1_on_a_fixed_batch():
  config = tiny_config()
  spec = builders.build_spec(config, C)
  opt = builders.pretrain_optimizer(config)
  params = builders.init_params(spec, config.seed, HW)
  opt_state = gan.init_opt_state(opt, params)
  batch = fixed_batch()
  step = jax.jit(functools.partial(gan.gan_step, spec, opt))
  l1 = jax.jit(lambda p: jnp.mean(
      jnp.abs(
          gan.generate(spec, p["G"], batch, jax.random.PRNGKey(0), train=False) - batch["image"])))
  before = float(l1(params))
  for i in range(15):
    params, opt_state, metrics = step(params, opt_state, batch, jax.random.PRNGKey(i))
  after = float(l1(params))
  assert np.isfinite(float(metrics["d_loss"]))
  assert after < 0.8 * before, (before, after)


def test_checkpoint_save_restore_round_trips_a_training_state(tmp_path):
  """Params and Optax Adam states come back bitwise, with the same tree structure."""
  params = {
      "G": {"w": np.random.default_rng(0).normal(size=(3, 5)).astype(np.float32)},
      "D": {"b": np.arange(4, dtype=np.float32)}
  }
  opt = optax.adam(1e-3)
  opt_state = gan.init_opt_state(opt, params)
  grads = jax.tree.map(np.ones_like, params)
  _, opt_state["G"] = opt.update(grads["G"], opt_state["G"], params["G"])
  state = {
      "step": np.asarray(7, np.int64), "params": params, "opt_state": opt_state,
      "nonfinite_skips": np.asarray(1, np.int32)
  }
  ckpt = checkpoint.Checkpointer(str(tmp_path / "ckpt"))
  ckpt.save(7, state)
  target = jax.tree.map(np.zeros_like, state)
  restored, step = ckpt.restore(target)
  ckpt.close()
  assert step == 7
  assert jax.tree.structure(restored) == jax.tree.structure(state)
  for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state)):
    assert np.asarray(a).dtype == np.asarray(b).dtype
    assert np.asarray(a).tobytes() == np.asarray(b).tobytes()


def test_pretrain_mode_writes_a_png_grid(tmp_path):
  """`--mode=pretrain` on a tiny synthetic config: checkpoint, summaries, PNG sample grid."""
  workdir = str(tmp_path / "w")
  args = [
      sys.executable, "-m", "bil_jax.main", f"--workdir={workdir}", "--mode=pretrain",
      "--config.data.image_height=16", "--config.data.image_width=16",
      "--config.data.num_train_tasks=3", "--config.data.num_test_tasks=2",
      "--config.data.pairs_per_task=4", "--config.data.shots=2", "--config.data.queries=2",
      "--config.data.eval_queries=2", "--config.model.ngf=4", "--config.model.ndf=4",
      "--config.model.d_layers=2", "--config.pretrain.steps=2", "--config.pretrain.batch_size=2",
      "--config.pretrain.log_every=1", "--config.pretrain.checkpoint_every=2",
      "--config.pretrain.image_every=2"
  ]
  env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
  proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-4000:]
  png = os.path.join(workdir, "pretrain", "pretrain_samples_0000002.png")
  image = np.asarray(Image.open(png))
  assert image.ndim == 3 and image.shape[2] == 3
  # map, output and target columns of >= 96 px tiles under headers, rows named by task
  assert image.shape[0] > 2 * 96 and image.shape[1] > 3 * 96
  import tensorflow as tf  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  tags = {
      v.tag
      for path in glob.glob(os.path.join(workdir, "pretrain", "events.out.*"))
      for event in tf.compat.v1.train.summary_iterator(path)
      for v in event.summary.value
  }
  assert {"_hparams_/session_start_info", "pretrain_samples"} <= tags, tags
  assert os.path.isdir(os.path.join(workdir, "pretrain", "checkpoints", "2"))
  assert os.path.isfile(os.path.join(workdir, "config.json"))


def test_real_and_fake_logits_equal_two_separate_d_calls_with_batch_norm():
  """One vmapped D call on [real; fake] keeps each set's own batch-norm statistics."""
  config = tiny_config()
  config.model.norm = "batch"
  spec = builders.build_spec(config, C)
  params = builders.init_params(spec, 0, HW)
  pairs = fixed_batch(3)
  fake = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, pairs["image"].shape), jnp.float32)
  real_logits, fake_logits = gan.real_and_fake_logits(spec, params["D"], pairs, fake)
  s = gan.structure_input(spec, pairs)
  apply = functools.partial(spec.discriminator.apply, {"params": params["D"]}, s)
  np.testing.assert_allclose(real_logits, apply(pairs["image"]), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(fake_logits, apply(fake), rtol=1e-5, atol=1e-5)
  # Batch statistics of the merged batch would differ: the test can tell the two apart.
  merged = spec.discriminator.apply({"params": params["D"]}, jnp.concatenate([s, s]),
                                    jnp.concatenate([pairs["image"], fake]))[:3]
  assert not np.allclose(merged, real_logits, atol=1e-3)
