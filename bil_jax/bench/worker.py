"""One benchmark job, in this process or a fresh one (``python -m bil_jax.bench.worker``).

The benchmark runs every configuration in its own process, so that its peak memory
(device ``peak_bytes_in_use`` on GPU/TPU, the process's peak RSS) belongs to that
configuration alone. A job is a JSON object:

  {"kind": "cost" | "compile", "config": <config JSON>, "estimator": {"name", "options"},
   "inner_steps": K, "meta_batch": M, "remat": "none"|"step"|"nested", "peaks": {...},
   "repeats": 5, "warmup": 1, "flops": true, "step_limit_s": 300}
  {"kind": "pretrain", "config": <config JSON>, "peaks": {...}, "repeats": 5, "flops": true}
  {"kind": "flops", "config": <config JSON>, "estimator": {...} (absent: pre-training),
   "inner_steps": K, "meta_batch": M, "remat": ...}
  {"kind": "fidelity", "config": <config JSON>, "estimators": [{"name", "options"}, ...],
   "workdir": DIR, "num_seeds": S, "meta_batch": M, "data": "config"|"random",
   "params_from": "" | a workdir with a pre-training checkpoint}

and its result is the record (cost, compile, pretrain), {"flops"} or the fidelity dict. An expected
error (bad option, missing file) is the result {"error": "one line"}; a compile job
stopped after its timeout keeps the FLOPs it had counted.

  python -m bil_jax.bench.worker JOB.json RESULT.json
"""
import json
import os
import subprocess
import sys
import tempfile
from typing import Callable, Optional


def _cost_job(job: dict, config, setup, partial_path: str = "") -> dict:
  from bil_jax.bench import common, cost  # pylint: disable=import-outside-toplevel
  est = common.EstimatorSpec(**job["estimator"])
  common.parse_estimators(f"{est.name}:{est.options}" if est.options else est.name)
  setup = setup or cost.make_setup(config, est.name)
  if job["kind"] == "compile":

    def on_flops(n):
      if partial_path:
        with open(partial_path, "w") as f:
          json.dump({"flops": n}, f)

    return cost.compile_one(setup, est, int(job["inner_steps"]),
                            int(job["meta_batch"]), job["remat"], job["peaks"],
                            float(job.get("step_limit_s", 300)), on_flops=on_flops)
  return cost.bench_one(setup, est, int(job["inner_steps"]), int(job["meta_batch"]),
                        job["remat"], job["peaks"], int(job.get("repeats", 5)),
                        int(job.get("warmup", 1)), flops=bool(job.get("flops", True)))


def _fidelity_job(job: dict, config) -> dict:
  from bil_jax import checkpoint, compile_cache  # pylint: disable=import-outside-toplevel
  from bil_jax.bench import common, fidelity  # pylint: disable=import-outside-toplevel
  compile_cache.enable(config.compilation_cache)  # (cost workers time their compiles)
  specs = [common.EstimatorSpec(**e) for e in job["estimators"]]
  params = (checkpoint.phase_params(job["params_from"], "pretrain")
            if job.get("params_from") else None)
  out = fidelity.run_fidelity(config, specs, job["workdir"], int(job["num_seeds"]),
                              int(job["meta_batch"]), params, job.get("data", "config"),
                              log=lambda m: print(m, flush=True))
  if job.get("params_from"):
    out["weights"] = f"pre-trained ({job['params_from']})"
  return out


def run_job(job: dict, setup=None, partial_path: str = "") -> dict:
  """Runs one job (see the module docstring) in this process; returns its result.

  ``setup``: a :class:`bil_jax.bench.cost.Setup` to time instead of the config's model.
  ``partial_path``: a compile job writes {'flops'} there before it compiles.
  """
  from bil_jax.bench import common, cost  # pylint: disable=import-outside-toplevel
  config = common.config_from_json(job["config"])
  if job["kind"] in ("cost", "compile"):
    return _cost_job(job, config, setup, partial_path)
  if job["kind"] == "pretrain":
    return cost.pretrain_one(config, job["peaks"], int(job.get("repeats", 5)),
                             flops=bool(job.get("flops", True)))
  if job["kind"] == "flops":
    est = common.EstimatorSpec(**job["estimator"]) if job.get("estimator") else None
    return {
        "flops":
            cost.count_flops(config, est, int(job.get("inner_steps") or 0),
                             int(job.get("meta_batch") or 0), job.get("remat", "none"))
    }
  if job["kind"] == "fidelity":
    return _fidelity_job(job, config)
  raise ValueError(f"unknown job kind {job['kind']!r}")


def run_in_process(job: dict, out_dir: str, log: Callable = print,
                   timeout_s: Optional[float] = None, env: Optional[dict] = None) -> dict:
  """Runs ``job`` with ``python -m bil_jax.bench.worker`` in a fresh process (environment
  ``env`` added to this one's); its result, or {'error'} on a failure or after
  ``timeout_s`` seconds."""
  with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
    jpath, rpath = os.path.join(tmp, "job.json"), os.path.join(tmp, "result.json")
    with open(jpath, "w") as f:
      json.dump(job, f)
    try:
      proc = subprocess.run([sys.executable, "-m", "bil_jax.bench.worker", jpath, rpath],
                            capture_output=True, text=True, check=False, timeout=timeout_s,
                            env=dict(os.environ, **(env or {})))
    except subprocess.TimeoutExpired:
      partial = {}
      if os.path.isfile(rpath + ".partial"):
        with open(rpath + ".partial") as f:
          partial = json.load(f)
      return dict(partial, error=f"did not finish in {timeout_s:.0f} s (stopped)")
    for line in proc.stdout.splitlines():
      log(line)
    if proc.returncode or not os.path.isfile(rpath):
      tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
      return {"error": f"worker exit status {proc.returncode}: {tail}"}
    with open(rpath) as f:
      return json.load(f)


def main(argv) -> int:
  job_path, result_path = argv[1], argv[2]
  with open(job_path) as f:
    job = json.load(f)
  from bil_jax import io_utils  # pylint: disable=import-outside-toplevel
  try:
    result = run_job(job, partial_path=result_path + ".partial")
  except (ValueError, FileNotFoundError) as e:
    result = {"error": f"{type(e).__name__}: {' '.join(str(e).split())}"}
  io_utils.write_json(result_path, result)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
