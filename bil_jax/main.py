"""Entry point: ``python -m bil_jax.main --config=configs/synthetic.py --workdir=DIR``.

Modes: ``pretrain`` (conventional training, Alg. 1 lines 1-5), ``metatrain`` (BiLevel
meta-training, lines 6-22), ``evaluate`` (test phase, Alg. 2, and the ablation table) and
``all`` (the three in turn; the default). ``--config.a.b=v`` overrides a config value;
configs are locked, so a misspelt key is an error.
"""
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", "configs/synthetic.py", "Experiment config file.",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, summaries and results.")
flags.DEFINE_enum("mode", "all", ["pretrain", "metatrain", "evaluate", "all"], "What to run.")
flags.mark_flags_as_required(["workdir"])


class _QuietLibraries:
  """Drops INFO records of chatty libraries (Orbax logs every file it writes)."""

  def filter(self, record) -> bool:
    return record.levelno > 20 or "orbax" not in record.pathname


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.get_absl_handler().addFilter(_QuietLibraries())
  # Imported here so that --help and flag errors do not pay for importing JAX.
  from bil_jax import train  # pylint: disable=g-import-not-at-top
  config, workdir = FLAGS.config, FLAGS.workdir
  logging.info("config:\n%s", config)
  params = None
  if FLAGS.mode in ("pretrain", "all"):
    params = train.pretrain(config, workdir)
  if FLAGS.mode in ("metatrain", "all"):
    train.metatrain(config, workdir, initial_params=params)
  if FLAGS.mode in ("evaluate", "all"):
    from bil_jax import evaluate  # pylint: disable=g-import-not-at-top
    evaluate.evaluate(config, workdir)


def run():
  """Console-script entry point (``bil-jax``)."""
  app.run(main)


if __name__ == "__main__":
  sys.exit(run())
