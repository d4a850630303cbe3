"""Safe reading of user images and label maps, with one-line errors.

Every reader raises :class:`DataError` whose message is ONE line that starts
with the offending file, e.g.::

  /data/bdd/labels/sem_seg/masks/train/a.png: label id 23 at pixel (y=4, x=7)
  is not a class (valid: 0-18 and 255)

(printed on one line).  Resizing helpers work on numpy arrays:

* images uint8 [H, W, 3] are resized with PIL's antialiased bilinear filter;
* label maps uint8 [H, W] with nearest neighbour, so class ids stay valid.
"""
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.webp')


class DataError(ValueError):
  """Bad user data; ``str(err)`` is one line naming the file."""

  def __init__(self, path, message: str):
    one_line = ' '.join(str(message).split())
    super().__init__(f'{path}: {one_line}')
    self.path = str(path)


def first_line(err: BaseException) -> str:
  """The first non-empty line of an exception's message (or its type)."""
  for line in str(err).splitlines():
    if line.strip():
      return f'{type(err).__name__}: {line.strip()}'
  return type(err).__name__


def check_manual_dir(path: str, what: str) -> str:
  """Returns ``path`` if it is a non-empty directory, else raises DataError.

  Args:
    path: the TFDS manual_dir (or a dataset folder inside it).
    what: what should be there, e.g. 'the BDD100K folder (see
      docs/datasets.md)'.
  """
  if not path:
    raise DataError(
        '<data.manual_dir>', f'not set: pass --manual_dir=DIR '
        f'(prepare.py) or --config.data.manual_dir=DIR (training) '
        f'with {what}')
  if not os.path.isdir(path):
    raise DataError(path, f'manual_dir does not exist; it should hold {what}')
  if not os.listdir(path):
    raise DataError(path, f'manual_dir is empty; it should hold {what}')
  return path


def _open(path: str) -> Image.Image:
  """Opens and fully decodes an image file, raising DataError on failure."""
  try:
    with Image.open(path) as im:
      im.load()
      return im.copy()
  except FileNotFoundError:
    raise DataError(path, 'file not found') from None
  except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as e:
    raise DataError(path, f'cannot read image ({first_line(e)})') from None


def read_rgb(path: str) -> np.ndarray:
  """Reads an image as uint8 [H, W, 3] (grey and RGBA are converted)."""
  return np.asarray(_open(path).convert('RGB'), np.uint8)


def read_ids(path: str) -> np.ndarray:
  """Reads a single-channel label map of class ids: int64 [H, W].

  Accepts 8-bit grey ('L'), palette ('P': the palette INDEX is the id) and
  16/32-bit integer PNGs.  An RGB(A) file is accepted only when its channels
  are equal (a grey image saved as RGB); otherwise it is a colour-coded label
  and DataError says so.
  """
  im = _open(path)
  if im.mode in ('L', 'P', 'I', 'I;16', 'I;16B', 'I;16L'):
    return np.asarray(im).astype(np.int64)
  if im.mode in ('RGB', 'RGBA', 'LA'):
    arr = np.asarray(im.convert('RGB'))
    if (np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2])):
      return arr[..., 0].astype(np.int64)
    raise DataError(
        path, f'label map has {im.mode} colours; expected a '
        'single-channel image of class ids')
  raise DataError(
      path, f'unsupported label image mode {im.mode!r}; expected '
      'a single-channel image of class ids')


def check_ids(path: str, ids: np.ndarray, num_classes: int, extra: Sequence[int] = ()) -> None:
  """Raises DataError naming the first pixel whose id is not a class.

  Args:
    path: the label file, for the message.
    ids: int [H, W].
    num_classes: valid ids are 0..num_classes-1 ...
    extra: ... and these (e.g. 255 for void before it is remapped).
  """
  bad = (ids < 0) | (ids >= num_classes)
  for e in extra:
    bad &= ids != e
  if bad.any():
    y, x = (int(v[0]) for v in np.nonzero(bad))
    valid = f'0-{num_classes - 1}' + ''.join(f' and {e}' for e in extra)
    raise DataError(
        path, f'label id {int(ids[y, x])} at pixel (y={y}, x={x}) '
        f'is not a class (valid: {valid}); {int(bad.sum())} such '
        'pixels')


def colours_to_ids(path: str, rgb: np.ndarray, palette: Dict[Tuple[int, int, int], int],
                   palette_name: str) -> np.ndarray:
  """Maps a colour-coded label image to ids through ``palette``.

  Args:
    path: the label file, for the message.
    rgb: uint8 [H, W, 3].
    palette: {(r, g, b): id}.
    palette_name: e.g. 'CamVid', for the message.

  Returns:
    int64 [H, W] ids.  DataError names the first pixel of an unknown colour.
  """
  codes = ((rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2])
  keys = np.array(sorted((r << 16) | (g << 8) | b for r, g, b in palette), np.int64)
  values = np.array([palette[((k >> 16) & 255, (k >> 8) & 255, k & 255)] for k in keys], np.int64)
  pos = np.clip(np.searchsorted(keys, codes), 0, len(keys) - 1)
  bad = keys[pos] != codes
  if bad.any():
    y, x = (int(v[0]) for v in np.nonzero(bad))
    colour = tuple(int(c) for c in rgb[y, x])
    raise DataError(
        path, f'colour {colour} at pixel (y={y}, x={x}) is not in '
        f'the {palette_name} palette; {int(bad.sum())} such pixels')
  return values[pos]


def check_same_size(image_path: str, image: np.ndarray, label_path: str, label: np.ndarray) -> None:
  """Raises DataError if image [H, W, 3] and label [H', W'] differ in size."""
  if image.shape[:2] != label.shape[:2]:
    raise DataError(
        label_path, f'label is {label.shape[1]}x{label.shape[0]} '
        f'but its image {image_path} is {image.shape[1]}x'
        f'{image.shape[0]} (width x height)')


# ---------------------------------------------------------------------------
# Geometry
# ---------------------------------------------------------------------------


def _pil_resize(arr: np.ndarray, height: int, width: int, nearest: bool) -> np.ndarray:
  if arr.shape[:2] == (height, width):
    return arr
  resample = Image.NEAREST if nearest else Image.BILINEAR
  return np.asarray(Image.fromarray(arr).resize((width, height), resample))


def resize_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
  """uint8 [h, w, 3] -> uint8 [height, width, 3] (antialiased bilinear)."""
  return _pil_resize(image, height, width, nearest=False)


def resize_ids(ids: np.ndarray, height: int, width: int) -> np.ndarray:
  """uint8 [h, w] -> uint8 [height, width] (nearest neighbour)."""
  return _pil_resize(ids, height, width, nearest=True)


def cover_size(h: int, w: int, height: int, width: int) -> Tuple[int, int]:
  """Smallest (h', w') with the aspect of (h, w) covering height x width."""
  scale = max(height / h, width / w)
  return max(height, int(round(h * scale))), max(width, int(round(w * scale)))


def center_crop(arr: np.ndarray, height: int, width: int) -> np.ndarray:
  """The centre height x width window of [h, w, ...] (h >= height, w >= width)."""
  top = (arr.shape[0] - height) // 2
  left = (arr.shape[1] - width) // 2
  return arr[top:top + height, left:left + width]


def resize_center_crop(image: np.ndarray, ids: Optional[np.ndarray], height: int, width: int):
  """Resizes keeping the aspect ratio so the image covers height x width, then
  centre-crops (Sec. 5.1: "resized and then center-cropped to 128x256").

  Args:
    image: uint8 [h, w, 3].
    ids: uint8 [h, w] label map or None.
    height, width: output size.

  Returns:
    (uint8 [height, width, 3], uint8 [height, width] or None).
  """
  rh, rw = cover_size(image.shape[0], image.shape[1], height, width)
  image = center_crop(resize_image(image, rh, rw), height, width)
  if ids is not None:
    ids = center_crop(resize_ids(ids, rh, rw), height, width)
  return image, ids


def list_images(folder: str) -> Dict[str, str]:
  """{stem: path} of the image files directly in ``folder`` (sorted)."""
  out = {}
  for name in sorted(os.listdir(folder)):
    stem, ext = os.path.splitext(name)
    if ext.lower() in IMAGE_EXTENSIONS:
      if stem in out:
        raise DataError(
            os.path.join(folder, name), f'two images named {stem!r} ({os.path.basename(out[stem])} '
            'too); keep one')
      out[stem] = os.path.join(folder, name)
  return out


def subfolders(folder: str, expected: str, what: str) -> List[str]:
  """Sorted names of the folders in ``folder``; DataError naming ``folder`` if it is
  missing ("missing; expected <expected>") or holds none ("has no <what>")."""
  if not os.path.isdir(folder):
    raise DataError(folder, f'missing; expected {expected}')
  names = sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))
  if not names:
    raise DataError(folder, f'has no {what}')
  return names
