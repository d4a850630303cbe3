"""Meta-gradient estimators for the GP parameters (Sec. 3.2, Eq. 2), one module each.

Every estimator is a function with one signature::

    estimator(loop, params, task, rng, frozen=None, *, option=default, ...) -> (grads, metrics)

``loop`` is an :class:`bil_jax.adapt.InnerLoop`, ``params = {'G', 'D'}`` the GP
parameters theta, ``task = {'support': Pairs, 'query': Pairs}`` one episode, ``grads``
is shaped like ``params`` (a descent direction for the outer optimizer) and ``metrics``
a dict of scalars. The keyword-only parameters are the estimator's options; their
defaults declare their types. The building blocks (adaptation, query losses, the two
pullbacks, the shared metrics) are public in :mod:`bil_jax.estimators.core`.

``config.meta.estimator`` selects one:

* a shipped name: ``second_order``, ``first_order``, ``reptile``, ``truncated``, ``es``,
  ``implicit``, ``meta_sgd``;
* or ``package.module:function``, imported from the user's own code (no registration).

``config.meta.estimator_options`` sets options as ``"name=value,name=value"``; each
value is parsed with the type of the option's default (docs/estimators.md).
"""
import importlib
import inspect
from typing import Any, Callable, Dict

from bil_jax.estimators.es import es
from bil_jax.estimators.first_order import first_order
from bil_jax.estimators.implicit import implicit
from bil_jax.estimators.meta_sgd import meta_sgd
from bil_jax.estimators.reptile import reptile
from bil_jax.estimators.second_order import second_order
from bil_jax.estimators.truncated import truncated

Estimator = Callable[..., tuple]
_REGISTRY: Dict[str, Estimator] = {}


def register(name: str):
  """Decorator: makes an estimator selectable as ``config.meta.estimator = name``."""

  def wrap(fn):
    _REGISTRY[name] = fn
    return fn

  return wrap


for _fn in (second_order, first_order, reptile, truncated, es, implicit, meta_sgd):
  register(_fn.__name__)(_fn)


def names() -> list:
  return sorted(_REGISTRY)


def _import(spec: str) -> Estimator:
  """``package.module:function`` -> the function; one-line errors naming the key."""
  module_name, _, attr = spec.partition(":")
  try:
    module = importlib.import_module(module_name)
  except ImportError as e:
    raise ValueError(f"meta.estimator={spec!r}: cannot import {module_name!r} ({e})") from None
  fn = getattr(module, attr, None)
  if not callable(fn):
    raise ValueError(f"meta.estimator={spec!r}: {module_name} has no function {attr!r}")
  return fn


def get(name: str) -> Estimator:
  """The estimator named ``name`` (a shipped name or ``module:function``)."""
  if ":" in name:
    return _import(name)
  if name not in _REGISTRY:
    raise ValueError(f"meta.estimator={name!r} is not one of {names()} "
                     "(or package.module:function)")
  return _REGISTRY[name]


def init_meta_parameters(name: str, params: dict) -> dict:
  """``params`` plus the meta-parameters estimator ``name`` learns (Meta-SGD's rates).

  An estimator declares them with a function attribute ``init_meta_parameters(params)
  -> params``; estimators without one learn only G and D.
  """
  init = getattr(get(name), "init_meta_parameters", None)
  return init(params) if init is not None else params


def options(fn: Estimator) -> Dict[str, Any]:
  """The declared options of an estimator: {name: default} of its keyword-only params."""
  return {
      p.name: p.default
      for p in inspect.signature(fn).parameters.values()
      if p.kind is inspect.Parameter.KEYWORD_ONLY
  }


def _parse_value(name: str, text: str, default: Any) -> Any:
  kind = type(default)
  if kind is bool:
    if text.lower() not in ("true", "false", "1", "0"):
      raise ValueError(f"meta.estimator_options {name}={text!r} is not a bool")
    return text.lower() in ("true", "1")
  try:
    return kind(text) if default is not None else text
  except ValueError:
    raise ValueError(f"meta.estimator_options {name}={text!r} is not a "
                     f"{kind.__name__}") from None


def parse_options(fn: Estimator, text: str, spec: str = "") -> Dict[str, Any]:
  """``"a=1,b=0.5"`` -> {'a': 1, 'b': 0.5}, typed by ``fn``'s declared defaults."""
  declared = options(fn)
  out = {}
  for item in (t.strip() for t in (text or "").split(",")):
    if not item:
      continue
    name, eq, value = item.partition("=")
    name = name.strip()
    if not eq or name not in declared:
      raise ValueError(f"meta.estimator_options: {item!r} is not name=value of an option of "
                       f"{spec or fn.__name__} (its options: {declared or 'none'})")
    out[name] = _parse_value(name, value.strip(), declared[name])
  return out


def resolve(name: str, options_text: str = "") -> Estimator:
  """The estimator ``name`` with ``options_text`` bound: (loop, params, task, rng, frozen)."""
  fn = get(name)
  opts = parse_options(fn, options_text, name)
  if not opts:
    return fn
  bound = lambda loop, params, task, rng, frozen=None: fn(loop, params, task, rng, frozen, **opts)
  bound.__name__ = getattr(fn, "__name__", name)
  return bound
