"""Timing of the Eq. 3 retrieval (:mod:`bil_jax.retrieval`) on random maps.

  python -m bil_jax.bench.retrieval [--num_candidates=7000] [--chunk_size=128]

By default: 7,000 random 128x256 candidate maps of 20 classes against a 5-map query,
the streets setting of the paper; prints the time of the similarity and top-5 after the
first compilation.
"""
import time

import jax
import numpy as np

from bil_jax import retrieval


def bench(num_candidates: int = 7000, height: int = 128, width: int = 256, num_classes: int = 20,
          num_query: int = 5, chunk_size: int = 128, seed: int = 0) -> float:
  """Times :func:`bil_jax.retrieval.task_similarity` and the top-5 on random maps;
  returns seconds (after compile)."""
  rng = np.random.default_rng(seed)
  cands = rng.integers(0, num_classes, (num_candidates, height, width), dtype=np.uint8)
  query = rng.integers(0, num_classes, (num_query, height, width), dtype=np.uint8)
  ids = np.arange(num_candidates)
  # Compile outside the timed region.
  retrieval.task_similarity(query, cands[:chunk_size], ids[:chunk_size], num_classes,
                            chunk_size=chunk_size)
  t0 = time.perf_counter()
  sims = retrieval.task_similarity(query, cands, ids, num_classes, chunk_size=chunk_size)
  top = retrieval.top_k_tasks(sims, 5)
  seconds = time.perf_counter() - t0
  print(f"{num_candidates} candidate maps {height}x{width}, {num_classes} classes, "
        f"{num_query}-map query, chunk {chunk_size}: {seconds:.2f} s on "
        f"{jax.devices()[0].platform} (top-5 {top.tolist()})")
  return seconds


def _main(argv) -> None:
  from absl import flags  # pylint: disable=import-outside-toplevel
  if len(argv) > 1:
    raise SystemExit(f"error: unexpected arguments: {argv[1:]}")
  n = flags.FLAGS.num_candidates
  print(
      f"expected: about {10 + n // 300} s on a 2-core CPU (one compile, {n} maps; rough); "
      "prints one line, writes no file", flush=True)
  bench(num_candidates=n, chunk_size=flags.FLAGS.chunk_size)


def main() -> None:
  """``python -m bil_jax.bench.retrieval``: flags as in the module docstring."""
  from absl import app, flags  # pylint: disable=import-outside-toplevel
  flags.DEFINE_integer("num_candidates", 7000, "Random candidate maps.")
  flags.DEFINE_integer("chunk_size", 128, "Candidate maps per compiled chunk.")
  app.run(_main)


if __name__ == "__main__":
  main()
