"""The whole config checked before a run does any work or writes anything.

:func:`problems` returns one line per fault, each naming the key, its value and what is
allowed (with "did you mean" where a name is close to a valid one); :func:`check` raises
:class:`ConfigError` with them. The checks call the same functions the run will call
later (the estimator registry, :mod:`bil_jax.optimizers`, the model builders, the mesh
choice), so that what passes here is what the run accepts. Nothing is written: the
workdir is probed with a temporary folder that is removed at once.
"""
import difflib
import os
import tempfile
from typing import Callable, Iterable, List

import ml_collections
import optax

from bil_jax import (adapt, cli, cpu_devices, errors, estimators, losses, models, nonfinite,
                     optimizers, parallel)
from bil_jax.data import loading, registry
from bil_jax.models import layers, patchgan

REFERENCE_SOURCES = ("self", "other")


class ConfigError(errors.TrainingError):
  """The config cannot run; ``lines`` holds one message per fault."""

  def __init__(self, lines: List[str]):
    self.lines = list(lines)
    super().__init__("; ".join(self.lines))


def did_you_mean(value, allowed: Iterable[str]) -> str:
  """' (did you mean 'x'?)' for the allowed name closest to ``value``, else ''."""
  close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1, cutoff=0.6)
  return f"; did you mean {close[0]!r}?" if close else ""


def _one_of(key: str, value, allowed: Iterable[str]) -> None:
  allowed = list(allowed)
  if value not in allowed:
    raise ValueError(f"{key}={value!r} is not one of {allowed}{did_you_mean(value, allowed)}")


def _at_least(config, key: str, low: int, why: str = "") -> None:
  value = config
  for part in key.split("."):
    value = value[part]
  if value < low:
    raise ValueError(f"{key}={value!r}: must be >= {low}{why}")


def _optax_names(kind: str) -> list:
  """Public optax functions that look like optimizers or (kind='schedule') schedules."""
  names = [n for n in dir(optax) if not n.startswith("_") and callable(getattr(optax, n))]
  return [n for n in names if ("schedule" in n) == (kind == "schedule")]


def _optimizer(config, key: str) -> None:
  """``key`` builds with :func:`optimizers.from_spec`; a close optax name is suggested."""
  spec = config
  for part in key.split("."):
    spec = spec[part]
  try:
    optimizers.from_spec(spec, key)
  except ValueError as e:
    name, schedule = spec.get("name", ""), (spec.get("schedule") or {}).get("name", "")
    hint = ""
    if name and not callable(getattr(optax, str(name), None)):
      hint = did_you_mean(name, _optax_names("optimizer"))
    elif schedule and not callable(getattr(optax, str(schedule), None)):
      hint = did_you_mean(schedule, _optax_names("schedule"))
    raise ValueError(f"{e}{hint}") from None


def _estimator(key: str, name: str, options_text: str = "") -> None:
  if ":" not in str(name):
    _one_of(key, name, estimators.names())
  fn = estimators.get(name)
  try:
    estimators.parse_options(fn, options_text, name)
  except ValueError as e:
    given = [t.partition("=")[0].strip() for t in str(options_text).split(",")]
    unknown = [g for g in given if g and g not in estimators.options(fn)]
    hint = did_you_mean(unknown[0], estimators.options(fn)) if unknown else ""
    raise ValueError(f"{e}{hint}") from None


def _architecture(config) -> None:
  """The generator depth fits the image size and the PatchGAN keeps >= 1 logit."""
  h, w = loading.image_hw(config)
  if min(h, w) < 1:
    raise ValueError(f"data.image_height x data.image_width = {h}x{w}: both must be >= 1")
  models.generator_depth(config.model, (h, w))
  d_layers = int(config.model.d_layers)
  usable = [n for n in range(1, 9) if patchgan.patchgan_output_size(min(h, w), n) >= 1]
  if d_layers not in usable:
    raise ValueError(f"model.d_layers={d_layers} for {h}x{w} images: the PatchGAN needs "
                     f"1..{max(usable, default=0)} layers here (its output would be empty)")


def _perceptual(config) -> None:
  losses.check_perceptual(config.loss.perceptual)
  path = config.loss.vgg_weights
  if config.loss.lambda_b and not os.path.isfile(path or ""):
    losses.load_perceptual_weights(config.loss.perceptual, path)  # raises its one line
  lpips = config.eval.lpips_weights
  if lpips and not os.path.isfile(lpips):
    raise ValueError(f"eval.lpips_weights={lpips!r}: no such file")


def _creatable(workdir: str) -> None:
  """The workdir exists as a writable folder or can be created (probed, then removed)."""
  if not workdir:
    raise ValueError("--workdir is empty: give a folder for the run's outputs")
  path = os.path.abspath(workdir)
  probe = path
  while not os.path.exists(probe):
    probe = os.path.dirname(probe)
  if not os.path.isdir(probe):
    raise ValueError(f"--workdir={workdir}: {probe} is not a folder")
  try:
    os.rmdir(tempfile.mkdtemp(prefix=".bil_jax_probe_", dir=probe))
  except OSError as e:
    raise ValueError(f"--workdir={workdir}: cannot create it under {probe} "
                     f"({e.strerror or e})") from None


def _has_checkpoint(workdir: str, phase: str) -> bool:
  folder = os.path.join(workdir, phase, "checkpoints")
  return os.path.isdir(folder) and any(n.isdigit() for n in os.listdir(folder))


def _inputs(config, workdir: str, mode: str) -> None:
  """The phases ``mode`` runs have what they start from."""
  if mode == "metatrain" and not config.meta.from_scratch and not _has_checkpoint(
      workdir, "pretrain"):
    raise ValueError(f"--mode=metatrain: no pre-trained model in {workdir}/pretrain; run "
                     "--mode=pretrain first, or set --config.meta.from_scratch=True")
  if mode in ("xplus", "tune") and not _has_checkpoint(workdir, "pretrain"):
    raise ValueError(f"--mode={mode}: no pre-trained model in {workdir}/pretrain (X+ "
                     "continues it); run --mode=pretrain first")
  if mode == "evaluate":
    missing = [p for p in ("pretrain", "meta", "xplus") if not _has_checkpoint(workdir, p)]
    if missing:
      raise ValueError(f"--mode=evaluate: no {' or '.join(missing)} checkpoint in {workdir}; "
                       "run --mode=all (or the missing phases) first")


def _checks(config, workdir: str, mode: str) -> List[Callable[[], None]]:
  """The checks of a run of ``mode``, each a thunk raising a one-line ValueError."""
  pre, meta_ = mode in ("pretrain", "all"), mode in ("metatrain", "all")
  c = config
  out = [
      lambda: _one_of("--mode", mode, cli.MODES),
      lambda: _creatable(workdir),
      lambda: _one_of("nonfinite", c.nonfinite, nonfinite.MODES),
      lambda: _one_of("data.name", c.data.name, registry.known_names()),
      lambda: _one_of("data.augment.reference_source", c.data.augment.reference_source,
                      REFERENCE_SOURCES),
      lambda: _one_of("model.name", c.model.name, models.GENERATORS),
      lambda: _one_of("model.norm", c.model.norm, layers.NORM_KINDS),
      lambda: _one_of("model.dtype", c.model.dtype, layers.DTYPES),
      lambda: _one_of("loss.gan_mode", c.loss.gan_mode, losses.GAN_MODES),
      lambda: _architecture(c),
      lambda: _perceptual(c),
      lambda: adapt.remat_mode(c.meta.remat),
      lambda: _estimator("meta.estimator", c.meta.estimator, c.meta.estimator_options),
      lambda: c.eval.aux_estimator and _estimator("eval.aux_estimator", c.eval.aux_estimator),
      lambda: _optimizer(c, "optim"),
      lambda: _optimizer(c, "meta.inner_optimizer"),
      lambda: _optimizer(c, "meta.outer_optimizer"),
      lambda: _inputs(c, workdir, mode),
  ]
  out += [
      lambda k=k: _at_least(c, k, 1)
      for k in ("data.num_classes", "data.shots", "data.queries", "data.eval_queries", "model.ngf",
                "model.ndf", "meta.meta_batch", "meta.inner_steps", "meta.num_hosts")
  ]
  out += [
      lambda k=k: _at_least(c, k, 0)
      for k in ("eval.is_steps", "eval.aux_steps", "eval.aux_tasks", "eval.grid_tasks")
  ]
  for phase, runs in (("pretrain", pre), ("meta", meta_)):
    if runs:
      out += [
          lambda k=f"{phase}.{k}": _at_least(c, k, 1, f" for --mode={mode}")
          for k in ("steps", "log_every", "checkpoint_every", "image_every")
      ]
  if pre:
    out.append(lambda: _at_least(c, "pretrain.batch_size", 1) or parallel.data_mesh_for(
        int(c.pretrain.batch_size), "pretrain.batch_size"))
  if meta_:
    out.append(lambda: parallel.mesh_shape(len(cpu_devices.training_devices(
    )), int(c.meta.meta_batch), int(c.data.shots), int(c.data.queries), c.meta.mesh_shape))
  return out


def problems(config: ml_collections.ConfigDict, workdir: str, mode: str = "all") -> List[str]:
  """One line per fault of ``config`` for a run of ``mode`` in ``workdir``; [] if none."""
  lines = []
  for check_one in _checks(config, workdir, mode):
    try:
      check_one()
    except (ValueError, TypeError, KeyError, FileNotFoundError) as e:
      lines.append(" ".join(str(e).split()))
  return list(dict.fromkeys(lines))


def check(config: ml_collections.ConfigDict, workdir: str, mode: str = "all") -> None:
  """Raises :class:`ConfigError` listing :func:`problems`, if there are any."""
  lines = problems(config, workdir, mode)
  if lines:
    raise ConfigError(lines)
