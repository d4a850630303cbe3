"""Atomic file writes: a reader never sees a half-written JSON, Markdown or PNG file.

Every output file of a run goes through :func:`write_atomic`: the bytes go to a temporary
file in the same directory, which is then renamed over the target (``os.replace`` is
atomic on POSIX), so a run killed mid-write leaves the previous version intact.
"""
import io
import json
import os
from typing import Any, Iterable, Tuple, Union

import numpy as np


def write_atomic(path: str, data: Union[str, bytes]) -> None:
  """Writes ``data`` (text as UTF-8, or bytes) to ``path`` atomically; creates its folder."""
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "wb") as f:
    f.write(data.encode("utf-8") if isinstance(data, str) else data)
  os.replace(tmp, path)


def write_json(path: str, obj: Any) -> None:
  """``obj`` as indented JSON (values JSON cannot hold are written with ``str``)."""
  write_atomic(path, json.dumps(obj, indent=1, default=str))


def merge_json_series(path: str, series: Iterable[Tuple[int, Any]]) -> None:
  """Merges (step, value) pairs into the {step: value} JSON file at ``path`` (a resumed
  run keeps the values its earlier runs wrote), sorted by step."""
  old = {}
  if os.path.exists(path):
    with open(path) as f:
      old = {int(k): v for k, v in json.load(f).items()}
  old.update(dict(series))
  write_json(path, {str(k): old[k] for k in sorted(old)})


def png_bytes(image: np.ndarray) -> bytes:
  """A uint8 [H,W,3] image encoded as PNG."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  buf = io.BytesIO()
  Image.fromarray(np.asarray(image)).save(buf, format="PNG")
  return buf.getvalue()


def write_png(path: str, image: np.ndarray) -> None:
  """Writes a uint8 [H,W,3] image as PNG, atomically."""
  write_atomic(path, png_bytes(image))
