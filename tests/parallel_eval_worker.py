"""Runs the test phase on the tiny set-up of test_evaluate (data and checkpoints stubbed)
and writes WORKDIR/eval/results.json and samples.png (used by test_parallel_eval).

  python tests/parallel_eval_worker.py WORKDIR NUM_TEST_TASKS

Set XLA_FLAGS=--xla_force_host_platform_device_count=N before running for N CPU devices.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position

from bil_jax import evaluate  # pylint: disable=g-import-not-at-top,wrong-import-position
from test_evaluate import tiny_setup, tiny_stubs  # pylint: disable=g-import-not-at-top,wrong-import-position


def main():
  workdir, num_test = sys.argv[1], int(sys.argv[2])
  c, train_ts, test_ts, spec = tiny_setup(num_test=num_test)
  for module, name, value in tiny_stubs(train_ts, test_ts, spec):
    setattr(module, name, value)
  evaluate.evaluate(c, workdir)
  with open(os.path.join(workdir, "devices"), "w") as f:
    f.write(str(jax.device_count()))


if __name__ == "__main__":
  main()
