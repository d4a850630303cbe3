"""One benchmark job in a fresh process: ``python -m bil_jax.bench_worker JOB.json RESULT.json``.

The benchmark (:mod:`bil_jax.bench`) runs every configuration in its own process, so that
its peak memory (device ``peak_bytes_in_use`` on GPU/TPU, the process's peak RSS) belongs
to that configuration alone. A job is a JSON object:

  {"kind": "cost", "config": <config JSON>, "estimator": {"name", "options"},
   "inner_steps": K, "meta_batch": M, "remat": "none"|"step"|"nested", "peaks": {...},
   "repeats": 5, "warmup": 1, "flops": true}
  {"kind": "fidelity", "config": <config JSON>, "estimators": [{"name", "options"}, ...],
   "workdir": DIR, "num_seeds": S, "meta_batch": M, "data": "config"|"random",
   "params_from": "" | a workdir with a pre-training checkpoint}

and its result is the record (cost) or the fidelity dict written to RESULT.json.
An expected error (bad option, missing file) is written as {"error": "one line"}.
"""
import json
import os
import sys


def load_params(workdir: str):
  """{'G', 'D'} of the newest pre-training checkpoint of ``workdir``."""
  from bil_jax import checkpoint  # pylint: disable=import-outside-toplevel
  if hasattr(checkpoint, "phase_params"):
    return checkpoint.phase_params(workdir, "pretrain")
  params = checkpoint.latest_params(os.path.join(workdir, "pretrain", "checkpoints"))
  if params is None:
    raise FileNotFoundError(f"no pre-training checkpoint in {workdir}/pretrain")
  return params


def run_job(job: dict) -> dict:
  """Runs one job (see the module docstring) in this process; returns its result."""
  from bil_jax import bench_common  # pylint: disable=import-outside-toplevel
  config = bench_common.config_from_json(job["config"])
  if job["kind"] == "cost":
    from bil_jax import bench_cost  # pylint: disable=import-outside-toplevel
    est = bench_common.EstimatorSpec(**job["estimator"])
    bench_common.parse_estimators(f"{est.name}:{est.options}" if est.options else est.name)
    setup = bench_cost.make_setup(config, est.name)
    return bench_cost.bench_one(setup, est, int(job["inner_steps"]), int(job["meta_batch"]),
                                job["remat"], job["peaks"], int(job.get("repeats", 5)),
                                int(job.get("warmup", 1)), flops=bool(job.get("flops", True)))
  if job["kind"] == "fidelity":
    from bil_jax import bench_fidelity, compile_cache  # pylint: disable=import-outside-toplevel
    compile_cache.enable(config.compilation_cache)  # (cost workers time their compiles)
    specs = [bench_common.EstimatorSpec(**e) for e in job["estimators"]]
    params = load_params(job["params_from"]) if job.get("params_from") else None
    out = bench_fidelity.run_fidelity(config, specs, job["workdir"], int(job["num_seeds"]),
                                      int(job["meta_batch"]), params, job.get("data", "config"),
                                      log=lambda m: print(m, flush=True))
    if job.get("params_from"):
      out["weights"] = f"pre-trained ({job['params_from']})"
    return out
  raise ValueError(f"unknown job kind {job['kind']!r}")


def main(argv) -> int:
  job_path, result_path = argv[1], argv[2]
  with open(job_path) as f:
    job = json.load(f)
  from bil_jax import io_utils  # pylint: disable=import-outside-toplevel
  try:
    result = run_job(job)
  except (ValueError, FileNotFoundError) as e:
    result = {"error": f"{type(e).__name__}: {' '.join(str(e).split())}"}
  io_utils.write_json(result_path, result)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
