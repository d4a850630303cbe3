"""One command's phases in turn: ``train_and_evaluate(config, workdir, mode)``.

Pre-training and meta-training (:mod:`bil_jax.train`), the compute-matched baseline X+
and its learning-rate grid (:mod:`bil_jax.xplus`) and the final evaluation
(:mod:`bil_jax.evaluate`) are separate phases, each resumable from its own checkpoints;
this module checks the options and the workdir once and runs the phases a mode names.
"""
import ml_collections

from bil_jax import evaluate, parallel, train, validate, workdirs, xplus


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, mode: str = "all") -> None:
  """Checks the options and the workdir once, then runs ``mode``: 'pretrain', 'metatrain',
  'xplus' (the compute-matched baseline, :mod:`bil_jax.xplus`), 'tune' (X+'s learning-rate
  grid on validation; needs a pre-training checkpoint), 'evaluate' or 'all' (pretrain,
  metatrain, xplus, evaluate in turn).

  Several processes (``parallel.initialize_distributed``; ``bil_jax.main`` has called it
  already) run this together: each phase is computed by every process, shared files are
  written by process 0, and checkpoints are saved and restored by all of them together.
  """
  parallel.initialize_distributed(int(config.meta.num_hosts))
  validate.check(config, workdir, mode)  # every fault in one go, before any work
  workdirs.check_workdir(config, workdir)
  parallel.barrier("bil_jax:check_workdir")  # process 0 may have deleted old runs
  params = None
  if mode in ("pretrain", "all"):
    params = train.pretrain(config, workdir)
  if mode in ("metatrain", "all"):
    train.metatrain(config, workdir, initial_params=params)
  if mode == "tune":
    xplus.tune(config, workdir)
  if mode in ("xplus", "all"):
    xplus.xplus(config, workdir, params=params)
  if mode in ("evaluate", "all"):
    evaluate.evaluate(config, workdir)
