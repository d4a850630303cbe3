r"""Meta-gradient estimator benchmark on any experiment config: cost, fidelity, outcome.

  python -m bil_jax.bench --config=configs/synthetic.py --out=/tmp/bench
  python -m bil_jax.bench --config=configs/faces.py:pg2,smoke --out=/tmp/bench_ff
  python -m bil_jax.bench --config=configs/synthetic.py --config.model.ngf=8 \
      --estimators=second_order,first_order,reptile,truncated:backprop_steps=1 \
      --remat=none,step,nested --inner_steps=1,5,10 --meta_batch=1,5 --out=/tmp/sweep
  python -m bil_jax.bench --config=configs/synthetic.py \
      --estimators=second_order,first_order,reptile --outcome --outcome_steps=10 \
      --config.pretrain.steps=100 --out=/tmp/outcome
  python -m bil_jax.bench --preset=torch_ref_32 --torch --out=/tmp/bench32
  python -m bil_jax.bench --preset=paper_faces --compile_only --out=/tmp/paper_faces
  python -m bil_jax.bench --preset=device_check --out=/tmp/device_check
  python -m bil_jax.bench --quick --out=/tmp/quick

The config is read exactly as ``bil_jax.main`` reads it (``--config=FILE[:arg]``, locked,
``--config.a.b=v`` overrides; a bad key is a one-line error). The option flags are the
fields of :class:`bil_jax.bench.options.SweepOptions`; the sweep flags take
comma-separated lists and default to the config's own value. What runs:
:func:`bil_jax.bench.sweep.run`, or :func:`bil_jax.bench.device_check.run` for
``--preset=device_check``. Every command prints its expected duration first and the
paths it wrote last.
"""
import os
import platform
import sys

from bil_jax import cli
from bil_jax.bench import options, presets


def _define_flags(argv) -> None:
  """The benchmark's flags (at parse time, so that importing this module defines none)."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  cli.define_config_flag(argv)
  flags.DEFINE_string("out", "bench_out", "Output folder OUT.")
  flags.DEFINE_enum("preset", None,
                    sorted(presets.PRESETS) + list(presets.PROGRAMS),
                    "Config overrides and sweep options of a preset, or device_check.")
  flags.DEFINE_bool("quick", False, "Same as --preset=quick.")
  options.define_flags()


def parse_flags(argv):
  _define_flags(argv)
  return cli.parse_flags(argv)


def options_from_flags(argv) -> tuple:
  """(config, SweepOptions, out, preset) from the parsed flags; a config preset applied
  (``--config.*`` flags and option flags given win)."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  f = flags.FLAGS
  config, given = f.config, options.given_flags(f)
  preset = "quick" if f.quick else f.preset
  if preset in presets.PRESETS:
    user = {a[len("--config."):].split("=", 1)[0] for a in argv if a.startswith("--config.")}
    return config, presets.apply_preset(config, preset, given, user), f.out, preset
  return config, options.make(**given), f.out, preset


def _run_sweep(config, opts, out: str, log) -> list:
  from bil_jax.bench import estimate, sweep  # pylint: disable=import-outside-toplevel
  jobs = sweep.cost_jobs(sweep.parse(config, opts), "compile" if opts.compile_only else "cost")
  extra = " plus fidelity" if opts.fidelity else ""
  extra += " plus outcome runs" if opts.outcome else ""
  log(f"expected: {estimate.say(estimate.sweep_seconds(config, jobs, opts))} for "
      f"{len(jobs)} configurations{extra} on a 2-core CPU (rough; compile dominates "
      "small configs, see docs/benchmark.md)")
  result = sweep.run(config, opts, out, log=log)
  return sweep.output_paths(result, out)


def _main(argv):
  # On a GPU this process only measures the peaks: without this, JAX's default
  # preallocation (75% of the GPU) here would starve the fresh process of each
  # configuration and the PyTorch reference. The workers inherit it; their peak is
  # measured as peak_bytes_in_use, which preallocation does not change.
  os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
  if len(argv) > 1:
    cli.fail(f"unexpected arguments: {argv[1:]}")
  config, opts, out, preset = options_from_flags(sys.argv)
  from bil_jax.bench import sweep  # pylint: disable=import-outside-toplevel
  try:
    sweep.parse(config, opts)  # flag errors before any work
  except (ValueError, FileNotFoundError) as e:
    cli.fail(e)
  import jax  # pylint: disable=import-outside-toplevel
  log = lambda m: print(m, flush=True)
  log(f"bil_jax.bench on {jax.devices()[0].device_kind} ({jax.default_backend()}), "
      f"{os.cpu_count()} CPUs, jax {jax.__version__}, python {platform.python_version()}")
  try:
    if preset == "device_check":
      from bil_jax.bench import device_check  # pylint: disable=import-outside-toplevel
      paths = device_check.run(out, opts, log=log)
    else:
      paths = _run_sweep(config, opts, out, log)
  except (ValueError, KeyError, FileNotFoundError, RuntimeError) as e:
    cli.fail(e)
  log("wrote: " + ", ".join(paths))
  return 0


def main():
  """Console-script entry point (``bil-bench``)."""
  from absl import app  # pylint: disable=import-outside-toplevel
  app.run(_main, flags_parser=parse_flags)


if __name__ == "__main__":
  main()
