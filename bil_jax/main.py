"""Entry point: ``python -m bil_jax.main --config=configs/synthetic.py --workdir=DIR``.

Modes: ``pretrain`` (conventional training, Alg. 1 lines 1-5), ``metatrain`` (BiLevel
meta-training, lines 6-22), ``xplus`` (the compute-matched baseline X+, bil_jax/xplus.py),
``tune`` (X+'s learning-rate grid on validation; run it before ``xplus``), ``evaluate``
(tuning of the n-shot rows on validation, then the test phase, Alg. 2, and the table) and
``all`` (pretrain, metatrain, xplus, evaluate in turn; the default). ``--config.a.b=v``
overrides a config value; configs are locked, so a misspelt key is an error.

Exit status:
  0   done.
  1   an expected error (bad flag or config value, bad data, missing weights or
      checkpoint, unusable workdir, non-finite update with nonfinite='stop'): one line
      ``error: ...`` on stderr, no traceback. Unexpected errors keep their traceback.
  75  stopped by SIGTERM/SIGINT after checkpointing the current step; rerun the same
      command to resume (docs/reliability.md).
  130 Ctrl-C outside a training step (start-up, data building, evaluation): one line.
"""
import os
import sys

from absl import app
from absl import flags
from absl import logging

from bil_jax import cli, console

FLAGS = flags.FLAGS
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))

cli.define_config_flag(sys.argv)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, summaries and results.")
flags.DEFINE_enum("mode", "all", list(cli.MODES),
                  "What to run (all: pretrain, metatrain, xplus, evaluate).")
flags.mark_flags_as_required(["workdir"])


def _raised_in_project(err: BaseException) -> bool:
  """Whether the innermost frame of ``err``'s traceback is bil_jax code."""
  tb = err.__traceback__
  if tb is None:
    return False
  while tb.tb_next is not None:
    tb = tb.tb_next
  return os.path.abspath(tb.tb_frame.f_code.co_filename).startswith(_PACKAGE_DIR)


def is_expected(err: BaseException) -> bool:
  """Errors main reports in one line: the project's own, OS errors, and ValueErrors
  (bad config values or data) that bil_jax itself raised. Anything else is a bug and
  keeps its traceback."""
  from bil_jax import checkpoint, errors  # pylint: disable=g-import-not-at-top
  if isinstance(err, (errors.TrainingError, checkpoint.CheckpointError, OSError)):
    return True
  return isinstance(err, ValueError) and _raised_in_project(err)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config, workdir = FLAGS.config, FLAGS.workdir
  console.configure(FLAGS.verbosity)  # before TensorFlow, TFDS or a JAX backend is loaded
  # Imported here so that --help and flag errors do not pay for importing JAX.
  from bil_jax import compile_cache, cpu_devices, parallel  # pylint: disable=g-import-not-at-top
  from bil_jax import host_malloc  # pylint: disable=g-import-not-at-top
  try:  # one XLA CPU device per core for evaluation, before any backend starts
    cpu_devices.expose(int(config.meta.num_hosts))
    host_malloc.keep_large_buffers()  # XLA:CPU's per-run buffers stay in the heap
  except ValueError as e:
    cli.fail(e)
  # Several processes: join them before anything touches a JAX device.
  try:
    parallel.initialize_distributed(int(config.meta.num_hosts))
  except (RuntimeError, ValueError) as e:  # e.g. the coordinator cannot be reached
    cli.fail(f"jax.distributed.initialize: {e}")
  compile_cache.enable(config.compilation_cache)
  timer = compile_cache.CompileTimer()
  from bil_jax import pipeline, preemption, validate, workdirs  # pylint: disable=g-import-not-at-top
  try:  # every fault of the config, one line each, before anything is written
    validate.check(config, workdir, FLAGS.mode)
  except validate.ConfigError as e:
    for line in e.lines:
      print(f"error: {line}", file=sys.stderr)
    return 1
  if cpu_devices.describe():
    logging.info("%s", cpu_devices.describe())
  if host_malloc.describe():
    logging.debug("%s", host_malloc.describe())
  logging.info("config: %s (all values; --verbosity=1 also logs them here)",
               os.path.join(workdir, workdirs.CONFIG_FILE))
  logging.debug("config:\n%s", config)
  try:
    try:
      pipeline.train_and_evaluate(config, workdir, FLAGS.mode)
    finally:  # logged before any error line, which stays the last line of the output
      logging.info("%s", timer.summary())
  except preemption.Preempted as p:
    logging.warning("preempted: %s", p)
    print(f"preempted: {p}", file=sys.stderr)
    return preemption.PREEMPTED_EXIT_CODE
  except Exception as e:  # pylint: disable=broad-except
    if not is_expected(e):
      raise
    logging.info("stopping on an expected error", exc_info=False)
    cli.fail(e)
  for line in console.outputs(workdir, FLAGS.mode):
    logging.info("%s", line)
  return 0


def run():
  """Console-script entry point (``bil-jax``); Ctrl-C outside a training step (start-up,
  data building, evaluation) ends with one line and exit status 130."""
  try:
    app.run(main, flags_parser=cli.parse_flags)
  except KeyboardInterrupt:
    print(
        "interrupted (Ctrl-C); checkpoints already saved are kept: rerun the same command "
        "to resume", file=sys.stderr)
    sys.exit(130)


if __name__ == "__main__":
  sys.exit(run())
