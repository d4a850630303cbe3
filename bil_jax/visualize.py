"""Sample grids: segmentation maps and images side by side, as PNG and for TensorBoard."""
import os
from typing import Sequence

import numpy as np
from PIL import Image


def palette(num_classes: int) -> np.ndarray:
  """A fixed, distinct colour per class: uint8 [C,3] (class 0 is black)."""
  rng = np.random.default_rng(0)
  colours = rng.integers(40, 256, (max(num_classes, 1), 3)).astype(np.uint8)
  colours[0] = 0
  return colours


def colorize(maps: np.ndarray, num_classes: int) -> np.ndarray:
  """Class-id maps [...,H,W] -> float32 colour images [...,H,W,3] in [-1,1]."""
  return palette(num_classes)[np.asarray(maps)].astype(np.float32) / 127.5 - 1.0


def grid(columns: Sequence[np.ndarray], pad: int = 2) -> np.ndarray:
  """Tiles columns of images, each [R,H,W,3] in [-1,1], into one uint8 [R*(H+p), K*(W+p), 3]."""
  cols = [np.clip((np.asarray(c, np.float32) + 1.0) * 127.5, 0, 255).astype(np.uint8)
          for c in columns]
  rows, h, w, _ = cols[0].shape
  out = np.full((rows * (h + pad) + pad, len(cols) * (w + pad) + pad, 3), 255, np.uint8)
  for j, col in enumerate(cols):
    for i in range(rows):
      y, x = pad + i * (h + pad), pad + j * (w + pad)
      out[y:y + h, x:x + w] = col[i]
  return out


def save_png(path: str, image: np.ndarray) -> None:
  """Writes a uint8 [H,W,3] image atomically (temporary file, then rename)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + ".tmp.png"
  Image.fromarray(image).save(tmp)
  os.replace(tmp, path)
