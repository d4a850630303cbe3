"""Benchmark presets: named config overrides and sweep flags for ``bil_jax.bench``.

``--preset=torch_ref_32`` / ``torch_ref_64`` are the PyTorch reference configurations
(``bil_jax.bench_torch``); ``--quick`` is a few minutes on 2 CPU cores. A preset's config
overrides apply on top of ``--config``; ``--config.*`` flags given by the user win.
"""
from bil_jax import bench_common

_TORCH_REF = {"model.name": "pix2pix", "data.image_height": 32, "data.image_width": 32,
              "model.ngf": 16, "model.ndf": 16, "data.num_classes": 8, "data.shots": 5,
              "data.queries": 5, "model.d_layers": 3, "loss.lambda_b": 0.0,
              "meta.inner_optimizer": {"name": "sgd", "lr": 1e-4, "clip": 0.0,
                                       "schedule": {"name": ""}}}
# Presets: config overrides (on top of --config; --config.* flags win) and sweep flags.
PRESETS = {
    # The PyTorch reference configurations of issue 6 (bil_jax.bench_torch).
    "torch_ref_32": dict(config=_TORCH_REF, inner_steps="5", meta_batch="5",
                         estimators="second_order,first_order", remat="none", fidelity=False),
    "torch_ref_64": dict(config=dict(_TORCH_REF, **{"data.image_height": 64,
                                                    "data.image_width": 64,
                                                    "model.ngf": 32, "model.ndf": 32}),
                         inner_steps="5", meta_batch="5", estimators="second_order,first_order",
                         remat="none", fidelity=False),
    # A few minutes on 2 CPU cores: 32x32 ngf 8, K 1/5, M 1, remat step/none.
    "quick": dict(config={"model.name": "pix2pix", "data.image_height": 32,
                          "data.image_width": 32, "model.ngf": 8, "model.ndf": 8,
                          "loss.lambda_b": 0.0},
                  inner_steps="1,5", meta_batch="1", estimators="second_order,first_order,reptile",
                  remat="step,none", repeats=3, fidelity=False),
}

def apply_preset(config, name: str, opts: dict, user_keys=()) -> dict:
  """Applies preset ``name``'s config overrides except the keys in ``user_keys`` (given on
  the command line) and returns ``opts`` with the preset's sweep flags filled in."""
  p = dict(PRESETS[name])
  for k, v in p.pop("config").items():
    if k not in user_keys:
      bench_common.set_key(config, k, v)
  return dict(opts, **{k: v for k, v in p.items() if k not in opts}, title=f"preset {name}")
