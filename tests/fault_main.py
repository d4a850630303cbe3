"""TEST ONLY: ``python -m bil_jax.main`` with a fault injected (used by test_reliability).

  BIL_JAX_TEST_NAN_STEP=3 python tests/fault_main.py --workdir=... [main's flags]

The update that produces step BIL_JAX_TEST_NAN_STEP (1-based, of every phase) gets NaN
target images, so its losses and gradients are NaN. The library has no fault injection of
its own: this replaces the identity ``bil_jax.loop.fault_hook``.
"""
import logging
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bil_jax import loop  # pylint: disable=g-import-not-at-top,wrong-import-position
from bil_jax import main  # pylint: disable=g-import-not-at-top,wrong-import-position

NAN_STEP = int(os.environ.get("BIL_JAX_TEST_NAN_STEP", "-1"))


def nan_images(batch: dict) -> dict:
  """Every 'image' leaf of ``batch`` (pairs, or episodes' support and query) set to NaN."""
  return {
      k: (nan_images(v) if isinstance(v, dict) else np.full_like(v, np.nan) if k == "image" else v)
      for k, v in batch.items()
  }


def inject(phase: str, done: int, batch):
  if done != NAN_STEP:
    return batch
  logging.warning("%s step %d: injecting NaN target images (tests/fault_main.py)", phase, done)
  return nan_images(batch)


if __name__ == "__main__":
  loop.fault_hook = inject
  sys.exit(main.run())
