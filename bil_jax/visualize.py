"""Sample grids: segmentation maps and images side by side, as PNG and for TensorBoard."""
import math
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from bil_jax import io_utils


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
  cols = [
      np.clip((np.asarray(c, np.float32) + 1.0) * 127.5, 0, 255).astype(np.uint8) for c in columns
  ]
  rows, h, w, _ = cols[0].shape
  out = np.full((rows * (h + pad) + pad, len(cols) * (w + pad) + pad, 3), 255, np.uint8)
  for j, col in enumerate(cols):
    for i in range(rows):
      y, x = pad + i * (h + pad), pad + j * (w + pad)
      out[y:y + h, x:x + w] = col[i]
  return out


def upscale(images: np.ndarray, min_width: int) -> np.ndarray:
  """Nearest-neighbour enlargement of [...,H,W,C] by the smallest integer factor that makes
  W >= min_width (factor 1 when it already is)."""
  k = max(1, math.ceil(min_width / images.shape[-2]))
  return np.repeat(np.repeat(images, k, axis=-3), k, axis=-2) if k > 1 else images


def _font(size: int = 12):
  try:
    return ImageFont.load_default(size=size)
  except TypeError:  # Pillow < 10.1: the bitmap default font has one size
    return ImageFont.load_default()


def _wrap(text: str, width: int, draw: ImageDraw.ImageDraw, font) -> list:
  """Greedy word wrap of ``text`` into lines no wider than ``width`` pixels (where possible)."""
  lines = []
  for word in text.split():
    if lines and draw.textlength(f"{lines[-1]} {word}", font=font) <= width:
      lines[-1] = f"{lines[-1]} {word}"
    else:
      lines.append(word)
  return lines or [""]


def labeled_grid(columns: Sequence[np.ndarray], labels: Sequence[str], min_width: int = 96,
                 pad: int = 2, row_labels: Sequence[str] = ()) -> np.ndarray:
  """:func:`grid` of columns [R,H,W,3] in [-1,1], each enlarged (nearest neighbour) to at
  least ``min_width`` px wide and headed with its label (wrapped); with ``row_labels``
  (R strings, e.g. task names) a left margin names each row.

  Returns uint8 [header + R*(H'+p)+p, margin + K*(W'+p)+p, 3] with H', W' the enlarged
  sizes.
  """
  if len(labels) != len(columns):
    raise ValueError(f"{len(labels)} labels for {len(columns)} columns")
  rows = len(columns[0])
  if row_labels and len(row_labels) != rows:
    raise ValueError(f"{len(row_labels)} row labels for {rows} rows")
  body = grid([upscale(np.asarray(c), min_width) for c in columns], pad)
  col_w = (body.shape[1] - pad) // len(columns) - pad
  row_h = (body.shape[0] - pad) // rows - pad
  font = _font()
  probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
  wrapped = [_wrap(label, col_w, probe, font) for label in labels]
  line_h = font.getbbox("Ag")[3] + 2
  header_h = max(len(w) for w in wrapped) * line_h + 2 * pad
  margin_w = 0
  if row_labels:
    margin_w = int(
        min(max(probe.textlength(t.replace("_", "_ "), font=font) for t in row_labels),
            col_w)) + 3 * pad
  row_wrapped = [_wrap(t.replace("_", "_ "), margin_w - 2 * pad, probe, font) for t in row_labels]
  canvas = Image.new("RGB", (margin_w + body.shape[1], header_h + body.shape[0]), (255, 255, 255))
  canvas.paste(Image.fromarray(body), (margin_w, header_h))
  draw = ImageDraw.Draw(canvas)
  for j, lines in enumerate(wrapped):
    x0 = margin_w + pad + j * (col_w + pad)
    for i, line in enumerate(lines):
      x = x0 + max(0, (col_w - draw.textlength(line, font=font)) / 2)
      draw.text((x, pad + i * line_h), line, fill=(0, 0, 0), font=font)
  for r, lines in enumerate(row_wrapped):
    y0 = header_h + pad + r * (row_h + pad) + max(0, (row_h - len(lines) * line_h) // 2)
    for i, line in enumerate(lines):
      draw.text((pad, y0 + i * line_h), line.replace("_ ", "_"), fill=(0, 0, 0), font=font)
  return np.asarray(canvas)


def save_png(path: str, image: np.ndarray) -> None:
  """Writes a uint8 [H,W,3] image atomically (temporary file, then rename)."""
  io_utils.write_png(path, image)
