"""Optimizers by name (bil_jax/optimizers.py, builders.py): any optax optimizer is a
config change only, including the differentiated inner optimizer."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

import tiny
from test_estimators import _meta_losses
from bil_jax import builders, config_lib, estimators, optimizers


def _updates(opt, grads, params, steps=3):
  state = opt.init(params)
  out = []
  for _ in range(steps):
    u, state = opt.update(grads, state, params)
    out.append(u)
  return out


def test_default_specs_are_the_papers_adam():
  """optim, meta.inner_optimizer and meta.outer_optimizer default to Adam(1e-4, 0.5, 0.999)
  (the inner one with eps_root=1e-12) and give exactly optax.adam's updates."""
  c = config_lib.base_config()
  p = {"w": jnp.linspace(-1.0, 1.0, 6)}
  g = {"w": jnp.cos(jnp.arange(6.0))}
  for opt, want in ((builders.pretrain_optimizer(c), optax.adam(1e-4, 0.5, 0.999)),
                    (builders.outer_optimizer(c),
                     optax.adam(1e-4, 0.5, 0.999)), (builders.inner_loop(c, None).optimizer,
                                                     optax.adam(1e-4, 0.5, 0.999, eps_root=1e-12))):
    for a, b in zip(_updates(opt, g, p), _updates(want, g, p)):
      assert np.asarray(a["w"]).tobytes() == np.asarray(b["w"]).tobytes()


def test_aux_optimizer_is_the_outer_one_with_eval_aux_lr():
  c = config_lib.base_config()
  c.meta.outer_optimizer = {"name": "sgd", "lr": 0.5}
  p, g = {"w": jnp.ones(2)}, {"w": jnp.ones(2)}
  np.testing.assert_allclose(_updates(builders.aux_optimizer(c), g, p, 1)[0]["w"], -0.5)
  c.eval.aux_lr = 0.25
  np.testing.assert_allclose(_updates(builders.aux_optimizer(c), g, p, 1)[0]["w"], -0.25)


def test_clip_and_schedule():
  """clip > 0 clips the global norm first; a schedule's init_value defaults to lr."""
  p, g = {"w": jnp.zeros(2)}, {"w": jnp.array([3.0, 4.0])}
  opt = optimizers.from_spec({"name": "sgd", "lr": 1.0, "clip": 1.0}, "k")
  np.testing.assert_allclose(_updates(opt, g, p, 1)[0]["w"], [-0.6, -0.8], rtol=1e-6)
  opt = optimizers.from_spec(
      {
          "name": "sgd", "lr": 1.0,
          "schedule": {"name": "exponential_decay", "transition_steps": 1, "decay_rate": 0.5}
      }, "k")
  got = [float(u["w"][0]) for u in _updates(opt, g, p, 3)]
  np.testing.assert_allclose(got, [-3.0, -1.5, -0.75])


@pytest.mark.parametrize("spec, message", [
    ({"name": "adamz", "lr": 1.0
     }, r"meta\.inner_optimizer\.name='adamz' is not an optax optimizer"),
    ({"name": "sgd", "lr": 1.0, "b1": 0.5}, r"meta\.inner_optimizer: optax\.sgd does not take"),
    ({"name": "sgd", "lr": 1.0, "schedule": {"name": "nope"}
     }, r"meta\.inner_optimizer\.schedule\.name='nope' is not an optax schedule"),
    ({"name": "sgd", "lr": 1.0, "schedule": {"name": "cosine_decay_schedule", "bad": 1}
     }, r"meta\.inner_optimizer\.schedule: optax\.cosine_decay_schedule does not take"),
])
def test_bad_specs_give_one_line_errors_naming_the_key(spec, message):
  with pytest.raises(ValueError, match=message) as err:
    optimizers.from_spec(spec, "meta.inner_optimizer")
  assert "\n" not in str(err.value)


def test_a_new_inner_optimizer_is_a_config_override(tmp_path, monkeypatch):
  """--config.meta.inner_optimizer="{...}" from the command line builds that optimizer."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  from ml_collections import config_flags  # pylint: disable=import-outside-toplevel
  path = tmp_path / "cfg.py"
  path.write_text("from bil_jax import config_lib\n"
                  "def get_config():\n  c = config_lib.base_config()\n  c.lock()\n  return c\n")
  argv = [
      "prog", f"--config={path}",
      "--config.meta.inner_optimizer={'name': 'adamw', 'lr': 1e-3, 'weight_decay': 0.1}",
      "--config.optim.lr=3e-4", "--config.optim.clip=1.0"
  ]
  monkeypatch.setattr("sys.argv", argv)  # the config flag reads its overrides from sys.argv
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", str(path), flag_values=fv, lock_config=True)
  fv(argv)
  c = fv.config
  assert c.meta.inner_optimizer.to_dict() == {"name": "adamw", "lr": 1e-3, "weight_decay": 0.1}
  assert (c.optim.name, c.optim.lr, c.optim.clip) == ("adam", 3e-4, 1.0)
  p, g = {"w": jnp.ones(3)}, {"w": jnp.zeros(3)}
  u = _updates(builders.inner_loop(c, None).optimizer, g, p, 1)[0]["w"]
  np.testing.assert_allclose(u, -1e-3 * 0.1 * np.ones(3), rtol=1e-6)  # decoupled decay


@pytest.mark.parametrize("name, kwargs, lr, eps", [
    ("adamw", dict(b1=0.5, b2=0.999, eps_root=1e-12, weight_decay=0.05), 0.01, 1e-8),
    ("rmsprop", dict(decay=0.9, eps=1e-3), 0.01, 1e-7),
])
def test_second_order_through_other_optax_inner_optimizers_matches_fd(name, kwargs, lr, eps):
  """The second-order meta-gradient through K=2 steps of an inner optimizer given only by
  its optax name and kwargs equals float64 central finite differences (1e-5 relative)."""
  with jax.enable_x64(True):
    _, lp, params, task, rng = tiny.problem64(name, lr=lr, steps=2, **kwargs)
    grads, _ = jax.jit(functools.partial(estimators.second_order, lp))(params, task, rng)
    _, unravel = ravel_pytree(params)
    f = jax.jit(lambda x: _meta_losses(lp, unravel(x), task, rng))
    tiny.assert_matches_directional_fd(f, grads, params, eps=eps, rtol=1e-5)
