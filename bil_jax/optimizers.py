"""Optax optimizers by name: a config entry ``{name, lr, clip, schedule, **kwargs}``.

An optimizer spec (a ConfigDict or dict) names any optimizer that ``optax`` exports and
gives its keyword arguments:

  name       the optax function: "adam", "sgd", "adamw", "lion", "rmsprop", ...
  lr         its learning rate (``learning_rate``), or a schedule's initial value
  clip       > 0: clip the gradients to this global norm first (0: no clipping)
  schedule   {"name": an optax schedule ("" = a constant lr), **its kwargs}; when the
             schedule takes ``init_value`` (or ``value``) and it is not given, ``lr`` is used
  any other key is passed to the optax function as a keyword argument (b1, eps_root, ...)

Every key but ``name`` may be left out. An unknown name or a keyword the function does not
take is a one-line ValueError naming the config key (e.g. ``meta.inner_optimizer``).
"""
import inspect
from typing import Any, Callable, Mapping

import optax

RESERVED = ("name", "lr", "clip", "schedule")


def _as_dict(value: Any) -> dict:
  return value.to_dict() if hasattr(value, "to_dict") else dict(value)


def _optax_function(name: str, key: str, what: str) -> Callable:
  fn = getattr(optax, name, None) if isinstance(name, str) and name else None
  if not callable(fn) or name.startswith("_"):
    raise ValueError(
        f"{key}.name={name!r} is not an optax {what} (e.g. "
        f"{'adam, sgd, adamw, lion' if what == 'optimizer' else 'cosine_decay_schedule'})")
  return fn


def _call(fn: Callable, kwargs: dict, key: str, name: str):
  """``fn(**kwargs)`` with a one-line error naming ``key`` for a bad keyword."""
  try:
    inspect.signature(fn).bind(**kwargs)
  except TypeError as e:
    raise ValueError(f"{key}: optax.{name} does not take these arguments "
                     f"({', '.join(sorted(kwargs))}): {e}") from None
  try:
    return fn(**kwargs)
  except (TypeError, ValueError) as e:
    raise ValueError(f"{key}: optax.{name}({kwargs}) failed: {e}") from None


def learning_rate(lr: float, schedule: Mapping | None, key: str):
  """``lr``, or the optax schedule of ``schedule`` (a step -> lr function)."""
  schedule = _as_dict(schedule or {})
  name = schedule.pop("name", "")
  if not name:
    if schedule:
      raise ValueError(f"{key}.schedule has arguments {sorted(schedule)} but no name")
    return lr
  fn = _optax_function(name, f"{key}.schedule", "schedule")
  params = inspect.signature(fn).parameters
  for first in ("init_value", "value"):
    if first in params and first not in schedule:
      schedule[first] = lr
      break
  return _call(fn, schedule, f"{key}.schedule", name)


def from_spec(optimizer_spec: Mapping, key: str) -> optax.GradientTransformation:
  """The optax transformation of ``optimizer_spec`` (see the module docstring).

  Args:
    optimizer_spec: ``{name, lr, clip, schedule, **kwargs}``.
    key: the config key it came from, for error messages.
  """
  kwargs = _as_dict(optimizer_spec)
  name = kwargs.get("name", "")
  fn = _optax_function(name, key, "optimizer")
  lr = learning_rate(kwargs.get("lr", 1e-4), kwargs.get("schedule"), key)
  clip = float(kwargs.get("clip", 0.0) or 0.0)
  args = {k: v for k, v in kwargs.items() if k not in RESERVED}
  if "learning_rate" in inspect.signature(fn).parameters:
    args["learning_rate"] = lr
  opt = _call(fn, args, key, name)
  if not isinstance(opt, optax.GradientTransformation):
    raise ValueError(f"{key}.name={name!r}: optax.{name} does not return an optimizer")
  return optax.chain(optax.clip_by_global_norm(clip), opt) if clip > 0 else opt
