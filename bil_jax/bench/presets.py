"""Benchmark presets: named config overrides and sweep options for ``bil_jax.bench``.

* ``torch_ref_32`` / ``torch_ref_64``: the configurations of the eager PyTorch reference
  (:mod:`bil_jax.bench.torch_ref`).
* ``quick``: a few minutes on 2 CPU cores.
* ``paper_faces`` / ``paper_streets``: the paper's scale (Sec. 5.3): PG² on 128x128 faces
  with 7 classes and Pix2pix on 128x256 streets with 20 classes, 64-wide G and D, the
  LPIPS-VGG term on (a randomly initialised VGG16 unless ``loss.vgg_weights`` is set),
  meta-batch 5, 5 shots, 5 queries, K = 5; for ``--compile_only``.
* ``device_check`` (:mod:`bil_jax.bench.device_check`) is a program of its own, not a set
  of overrides.

A preset's config overrides apply on top of ``--config``; ``--config.*`` flags given by the
user win, and so do option flags given on the command line.
"""
from bil_jax.bench import common, options

_TORCH_REF = {
    "model.name": "pix2pix", "data.image_height": 32, "data.image_width": 32, "model.ngf": 16,
    "model.ndf": 16, "data.num_classes": 8, "data.shots": 5, "data.queries": 5, "model.d_layers": 3,
    "loss.lambda_b": 0.0,
    "meta.inner_optimizer": {"name": "sgd", "lr": 1e-4, "clip": 0.0, "schedule": {"name": ""}}
}
_TORCH_SWEEP = dict(inner_steps="5", meta_batch="5", estimators="second_order,first_order",
                    remat="none", fidelity=False)
# Sec. 5.3 (config_lib.paper_training), with 5 shots for both datasets.
_PAPER = {
    "model.ngf": 64, "model.ndf": 64, "model.d_layers": 3, "loss.lambda_a": 10.0,
    "loss.lambda_b": 2.0, "loss.perceptual": "lpips_vgg", "data.shots": 5, "data.queries": 5,
    "meta.meta_batch": 5, "meta.inner_steps": 5, "meta.inner_optimizer.lr": 1e-4,
    "meta.outer_optimizer.lr": 1e-4, "optim.lr": 1e-4, "pretrain.batch_size": 5
}
_PAPER_SWEEP = dict(estimators="second_order,first_order,implicit", remat="none,step,nested",
                    inner_steps="5", meta_batch="5", fidelity=False, repeats=1)


def _paper_preset(model: str, hw: tuple, num_classes: int) -> dict:
  """A paper-scale preset: Sec. 5.3's training at image size ``hw`` (H, W)."""
  sizes = {
      "model.name": model, "data.image_height": hw[0], "data.image_width": hw[1],
      "data.num_classes": num_classes
  }
  return dict(config=dict(_PAPER, **sizes), **_PAPER_SWEEP)


PRESETS = {
    "torch_ref_32":
        dict(config=_TORCH_REF, **_TORCH_SWEEP),
    "torch_ref_64":
        dict(
            config=dict(
                _TORCH_REF, **{
                    "data.image_height": 64, "data.image_width": 64, "model.ngf": 32,
                    "model.ndf": 32
                }), **_TORCH_SWEEP),
    # 32x32 ngf 8; second and first order at K 1 and 5, M 1, no remat: 4 compiles.
    "quick":
        dict(
            config={
                "model.name": "pix2pix", "data.image_height": 32, "data.image_width": 32,
                "model.ngf": 8, "model.ndf": 8, "loss.lambda_b": 0.0
            }, inner_steps="1,5", meta_batch="1", estimators="second_order,first_order",
            remat="none", repeats=3, fidelity=False),
    "paper_faces":
        _paper_preset("pg2", (128, 128), 7),
    "paper_streets":
        _paper_preset("pix2pix", (128, 256), 20),
}
PROGRAMS = ("device_check",)  # presets that are programs (bil_jax.bench.__main__)


def apply_config(config, name: str, user_keys=()) -> None:
  """Sets preset ``name``'s config overrides on ``config``, except the keys in
  ``user_keys`` (given on the command line)."""
  for k, v in PRESETS[name]["config"].items():
    if k not in user_keys:
      common.set_key(config, k, v)


def apply_preset(config, name: str, given: dict, user_keys=()) -> options.SweepOptions:
  """Applies preset ``name``'s config overrides (but not to ``user_keys``) and returns the
  options: ``given`` (from the command line) over the preset's over the defaults."""
  apply_config(config, name, user_keys)
  sweep = {k: v for k, v in PRESETS[name].items() if k != "config"}
  return options.make(**{**sweep, "title": f"preset {name}", **given})
