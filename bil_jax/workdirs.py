"""The workdir a run writes into: made by one config, or refused.

:func:`check_workdir` refuses a workdir made by a different config (or, with
``config.overwrite``, deletes its runs); :func:`record_config` writes the config a workdir
was made by.
"""
import fnmatch
import glob
import json
import logging
import os
import shutil

import jax

from bil_jax import config_lib, errors, io_utils

CONFIG_FILE = "config.json"
# Config keys that may change between runs sharing a workdir: they change neither the
# training trajectory nor what a checkpoint holds (fnmatch patterns on dotted keys).
# xplus.lr may be set after pre-training (e.g. to another seed's --mode=tune choice): X+
# records the rate it trained at (xplus.LR_FILE) and refuses to resume at another.
RESUMABLE_KEYS = ("overwrite", "nonfinite", "compilation_cache", "meta.num_hosts",
                  "meta.mesh_shape", "pretrain.steps", "meta.steps", "*.log_every", "*.image_every",
                  "*.checkpoint_every", "eval.*", "xplus.lr")
# Folders a run writes into its workdir (config.overwrite deletes them).
RUN_FOLDERS = ("pretrain", "meta", "xplus", "eval")
# Also deleted: the X+ learning-rate runs of --mode=tune (WORKDIR/xplus_lr<i>) and their choice.
RUN_PATTERNS = ("xplus_lr*", "xplus_tuning.json")


def config_differences(old: dict, new: dict) -> list:
  """Dotted keys whose values differ, ignoring :data:`RESUMABLE_KEYS`."""
  keys = sorted(set(old) | set(new))
  return [
      k for k in keys if old.get(k, "<unset>") != new.get(k, "<unset>") and not any(
          fnmatch.fnmatchcase(k, p) for p in RESUMABLE_KEYS)
  ]


def check_workdir(config, workdir: str) -> None:
  """Checks that ``workdir`` was made by this config (or is new); writes nothing unless it
  overwrites. Whether it can be created at all is checked by :mod:`bil_jax.validate`.

  Raises errors.WorkdirError if its ``config.json`` comes from a config that differs in a key
  outside :data:`RESUMABLE_KEYS`. With ``config.overwrite=True`` the latter deletes the
  workdir's run folders (:data:`RUN_FOLDERS`) and ``config.json`` instead, so the run
  starts afresh.
  """
  if not workdir:
    raise errors.WorkdirError("--workdir is empty")
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.isfile(path):
    return
  with open(path) as f:
    try:
      old = json.load(f)
    except json.JSONDecodeError as e:
      raise errors.WorkdirError(
          f"{path}: unreadable ({e}); delete it or use another workdir") from None
  new = config_lib.flat_config(config)
  diff = config_differences(old, new)
  if not diff:
    return
  shown = "; ".join(f"{k}: {old.get(k, '<unset>')!r} -> {new.get(k, '<unset>')!r}"
                    for k in diff[:4]) + (" ..." if len(diff) > 4 else "")
  if not config.overwrite:
    raise errors.WorkdirError(
        f"workdir {workdir} was made by a different config ({len(diff)} keys differ: {shown});"
        f" use another --workdir, or --config.overwrite=True to delete its runs and restart")
  logging.warning("config.overwrite: deleting the runs in %s (config differs: %s)", workdir, shown)
  if jax.process_index() == 0:
    for name in RUN_FOLDERS:
      shutil.rmtree(os.path.join(workdir, name), ignore_errors=True)
    for pattern in RUN_PATTERNS:
      for found in glob.glob(os.path.join(workdir, pattern)):
        if os.path.isdir(found):
          shutil.rmtree(found, ignore_errors=True)
        else:
          os.remove(found)
    os.remove(path)


def record_config(config, workdir: str) -> None:
  """Writes ``WORKDIR/config.json`` (atomically, process 0) for :func:`check_workdir`."""
  if jax.process_index() == 0:
    io_utils.write_json(os.path.join(workdir, CONFIG_FILE), config_lib.flat_config(config))
