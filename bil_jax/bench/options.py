"""The benchmark's options: one frozen dataclass, from which the absl flags are generated.

Every field of :class:`SweepOptions` is a flag ``--<field>`` with the field's type, default
and help. The flags themselves default to None, so that a preset's value
(:mod:`bil_jax.bench.presets`) can fill what the command line leaves out:
command line > preset > the field's default.
"""
import dataclasses
import typing
from typing import NamedTuple, Optional


def _opt(default, help_text: str, enum=None):
  return dataclasses.field(default=default, metadata={"help": help_text, "enum": enum})


@dataclasses.dataclass(frozen=True)
class SweepOptions:
  """What ``python -m bil_jax.bench`` sweeps and measures (flags of the same names)."""
  estimators: str = _opt(
      "second_order,first_order,reptile", "Comma-separated estimators with options, e.g. "
      "second_order,truncated:backprop_steps=2,es:pairs=16,sigma=0.02.")
  remat: str = _opt("", "none,step,nested (also on/off); '' = meta.remat.")
  inner_steps: str = _opt("", "K values, e.g. 1,5,10; '' = meta.inner_steps.")
  meta_batch: str = _opt("", "M values, e.g. 1,5; '' = meta.meta_batch.")
  repeats: int = _opt(5, "Timed steps per configuration (their median).")
  warmup: int = _opt(1, "Untimed steps before timing.")
  torch: bool = _opt(False, "Also time the eager PyTorch reference (pix2pix).")
  peak_size: str = _opt("large", "Size of the peak FLOP/s probes.", ("large", "small"))
  isolate: bool = _opt(True, "Each configuration in a fresh process.")
  flops: bool = _opt(True, "Count FLOPs (two extra lowerings per configuration).")
  compile_only: bool = _opt(
      False, "Lower and compile each configuration without training: FLOPs and XLA's "
      "memory analysis; one timed step where the estimate is under --step_limit_s.")
  step_limit_s: float = _opt(
      300.0, "--compile_only: time one step only where it is "
      "expected to take less than this many seconds.")
  job_timeout_s: float = _opt(
      0.0, "Stop a configuration's fresh process after this many "
      "seconds (0: never); it is reported as not finished.")
  fidelity: Optional[bool] = _opt(
      None, "Gradient fidelity against second_order (default: "
      "on unless second_order is the only estimator).")
  fidelity_seeds: int = _opt(2, "Seeds (meta-batches) for fidelity.")
  fidelity_tasks: int = _opt(0, "Tasks per seed (0 = meta.meta_batch).")
  fidelity_data: str = _opt("config", "Fidelity episodes: the config's dataset or random "
                            "images.", ("config", "random"))
  outcome: bool = _opt(
      False, "Pre-train once, meta-train each estimator, compare held-out "
      "L1 after IS adaptation.")
  outcome_steps: int = _opt(10, "Meta-steps of the equal-steps runs.")
  outcome_budget_s: float = _opt(
      0.0, "Meta-step seconds of the equal-time runs (0: "
      "outcome_steps x the slowest estimator's step).")
  outcome_seeds: int = _opt(
      1, "Seeds per outcome run: config.seed + i, i < N; the table "
      "gives mean ± std.")
  outcome_settings: str = _opt("same_steps,same_time", "same_steps,same_time or one of "
                               "them.")
  outcome_pretrained: str = _opt(
      "", "A workdir of --mode=pretrain to start from instead of "
      "pre-training in OUT/outcome/pretrained.")
  smoke: bool = _opt(False, "--preset=device_check at smoke size (tiny shapes, for a CPU "
                     "test).")
  title: str = _opt("", "Title of bench.md.")


class Sweep(NamedTuple):
  """The parsed lists of a sweep: EstimatorSpecs, remat modes, K and M values."""
  estimators: list
  remat: list
  inner_steps: list
  meta_batch: list


def _kind(field) -> type:
  t = field.type if not isinstance(field.type, str) else eval(field.type)  # pylint: disable=eval-used
  args = [a for a in typing.get_args(t) if a is not type(None)]
  return args[0] if args else t


def define_flags() -> None:
  """One absl flag per :class:`SweepOptions` field, defaulting to None."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  for f in dataclasses.fields(SweepOptions):
    help_text = f"{f.metadata['help']} (default {f.default!r})"
    kind = _kind(f)
    if f.metadata["enum"]:
      flags.DEFINE_enum(f.name, None, list(f.metadata["enum"]), help_text)
    elif kind is bool:
      flags.DEFINE_bool(f.name, None, help_text)
    elif kind is int:
      flags.DEFINE_integer(f.name, None, help_text)
    elif kind is float:
      flags.DEFINE_float(f.name, None, help_text)
    else:
      flags.DEFINE_string(f.name, None, help_text)


def given_flags(flag_values) -> dict:
  """{field: value} of the option flags given on the command line (not None)."""
  names = [f.name for f in dataclasses.fields(SweepOptions)]
  return {k: getattr(flag_values, k) for k in names if getattr(flag_values, k) is not None}


def make(**values) -> SweepOptions:
  """SweepOptions from ``values``, None values left at their defaults; a one-line error
  for an unknown name."""
  names = {f.name for f in dataclasses.fields(SweepOptions)}
  bad = sorted(set(values) - names)
  if bad:
    raise ValueError(f"unknown bench options {bad}; known: {sorted(names)}")
  return SweepOptions(**{k: v for k, v in values.items() if v is not None})
