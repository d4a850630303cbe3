"""Tiny fixtures in the real on-disk layouts of the datasets (written by tests).

Every image is rendered from its label map with one colour per class
(:func:`class_colour`), so a test can check that a builder keeps maps and
images aligned through cropping and resizing: after any geometric transform,
the image colour at a pixel away from class boundaries is its class colour.
"""
import json
import os
from typing import Dict, Sequence, Tuple

import numpy as np
from PIL import Image

from bil_jax.data import camvid
from bil_jax.data import landmarks as lm


def class_colour(ids: np.ndarray) -> np.ndarray:
  """A distinct, deterministic RGB colour per class id: uint8 [..., 3]."""
  ids = np.asarray(ids, np.int64)
  return np.stack([(ids * 67 + 40) % 256, (ids * 131 + 90) % 256, (ids * 199 + 10) % 256],
                  -1).astype(np.uint8)


def block_map(height: int, width: int, class_ids: Sequence[int], seed: int) -> np.ndarray:
  """A map of rectangular blocks (4 columns x 3 rows) of the given ids."""
  rng = np.random.default_rng(seed)
  ids = np.asarray(class_ids)
  grid = ids[rng.integers(0, len(ids), size=(3, 4))]
  rows = np.minimum(np.arange(height) * 3 // height, 2)
  cols = np.minimum(np.arange(width) * 4 // width, 3)
  return grid[rows][:, cols]


def save(path: str, array: np.ndarray, **kw) -> str:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(array).save(path, **kw)
  return path


# ---------------------------------------------------------------------------
# Paired folder: ROOT/{train,test}/<task>/{images,labels}/<name>.png
# ---------------------------------------------------------------------------


def write_paired_folder(root: str, tasks: Dict[str, Dict[str, int]], num_classes: int,
                        hw: Tuple[int, int] = (20, 30)):
  """tasks: {split: {task name: number of pairs}}."""
  k = 0
  for split, by_task in tasks.items():
    for task, n in by_task.items():
      for i in range(n):
        ids = block_map(*hw, range(num_classes), seed=k).astype(np.uint8)
        k += 1
        base = os.path.join(root, split, task)
        save(os.path.join(base, 'images', f'p{i:03d}.png'), class_colour(ids))
        save(os.path.join(base, 'labels', f'p{i:03d}.png'), ids)


# ---------------------------------------------------------------------------
# BDD100K: images/10k/{train,val}/*.jpg, labels/sem_seg/masks/{train,val}/*.png
# ---------------------------------------------------------------------------


def write_bdd100k(root: str, counts: Dict[str, int] = None,
                  hw: Tuple[int, int] = (36, 64)) -> Dict[str, list]:
  """Writes BDD-style pairs (ids 0-18 and 255); returns {folder: [names]}."""
  counts = counts or {'train': 3, 'val': 2}
  names = {}
  for folder, n in counts.items():
    names[folder] = []
    for i in range(n):
      name = f'{folder[:2]}{i:04d}-bdd'
      ids = block_map(*hw, list(range(19)) + [255], seed=100 + i + len(folder))
      save(os.path.join(root, 'images', '10k', folder, name + '.jpg'),
           class_colour(np.where(ids == 255, 19, ids)), quality=95)
      save(os.path.join(root, 'labels', 'sem_seg', 'masks', folder, name + '.png'),
           ids.astype(np.uint8))
      names[folder].append(name)
  return names


# ---------------------------------------------------------------------------
# CamVid: <seq>_<frame>.png with colour labels <seq>_<frame>_L.png
# ---------------------------------------------------------------------------


def write_camvid(root: str, frames: Dict[str, int] = None, hw: Tuple[int, int] = (36, 48)) -> None:
  """Writes the original release layout (701_StillsRaw_full/ and
  LabeledApproved_full/) with every palette colour used somewhere."""
  frames = frames or {'0001TP': 12, 'Seq05VD': 10}
  colours = np.array([c for _, c, _ in camvid.CAMVID_CLASSES], np.uint8)
  k = 0
  for seq, n in frames.items():
    for i in range(n):
      stem = (f'{seq}_{30 * i:06d}' if seq[0].isdigit() else f'{seq}_f{30 * i:05d}')
      idx = block_map(*hw, range(len(colours)), seed=k)
      # Every palette entry appears in the first frames.
      idx.flat[:len(colours)] = np.roll(np.arange(len(colours)), k)
      k += 1
      bdd_ids = np.array([b for _, _, b in camvid.CAMVID_CLASSES])[idx]
      save(os.path.join(root, '701_StillsRaw_full', stem + '.png'), class_colour(bdd_ids))
      save(os.path.join(root, 'LabeledApproved_full', stem + '_L.png'), colours[idx])


# ---------------------------------------------------------------------------
# FaceForensics: {train,test}/<video>/frames/*.png + landmarks
# ---------------------------------------------------------------------------


def face_frame(points: np.ndarray, hw: Tuple[int, int], tint: int) -> np.ndarray:
  """A frame rendered from the landmarks' map: uint8 [h, w, 3]."""
  seg = lm.rasterise(points, *hw)
  img = class_colour(seg).astype(np.int32)
  img[..., 0] = (img[..., 0] + tint) % 256
  return img.astype(np.uint8)


def frame_landmarks(f: int, size: int) -> np.ndarray:
  """Landmarks of frame f: a template face moving and scaling: [68, 2]."""
  scale = size * (0.55 + 0.05 * (f % 3))
  return lm.template(scale) + (4 + 2 * (f % 4), 3 + (f % 5))


def write_faceforensics(root: str, size: int = 64) -> Dict[str, dict]:
  """Three videos, one per landmark format, with known failures.

  train/vidA: 21 frames, OpenPose JSON per frame; frame 3 has no file and
    frame 4 has an empty 'people' list (2 failures, both in clip 1).
  train/vidB: 21 frames, landmarks.npy [21, 68, 3]; row 20 is NaN.
  test/vidC: 5 frames, per-frame .npy [68, 3]; frame 2 has a zero confidence.

  Returns:
    {video: {'split', 'frames', 'failed'}}.
  """
  info = {}
  hw = (size, size)

  def frames_dir(split, video):
    return os.path.join(root, split, video, 'frames')

  # vidA: OpenPose JSON.
  lm_dir = os.path.join(root, 'train', 'vidA', 'landmarks')
  os.makedirs(lm_dir, exist_ok=True)
  for f in range(21):
    pts = frame_landmarks(f, size)
    save(os.path.join(frames_dir('train', 'vidA'), f'{f:05d}.png'), face_frame(pts, hw, 10))
    if f == 3:
      continue
    people = [] if f == 4 else [{
        'pose_keypoints_2d': [], 'face_keypoints_2d':
            np.concatenate([np.concatenate([pts, np.full((68, 1), 0.8)], 1),
                            np.zeros((2, 3))]).ravel().tolist()
    }]
    with open(os.path.join(lm_dir, f'vidA_{f:012d}_keypoints.json'), 'w') as fh:
      json.dump({'version': 1.3, 'people': people}, fh)
  info['vidA'] = {'split': 'train', 'frames': 21, 'failed': [3, 4]}

  # vidB: one landmarks.npy with a NaN row.
  arr = np.zeros((21, 68, 3), np.float32)
  for f in range(21):
    pts = frame_landmarks(f + 1, size)
    arr[f, :, :2], arr[f, :, 2] = pts, 0.9
    save(os.path.join(frames_dir('train', 'vidB'), f'frame_{f:04d}.jpg'), face_frame(pts, hw, 60),
         quality=95)
  arr[20, 5, 0] = np.nan
  np.save(os.path.join(root, 'train', 'vidB', 'landmarks.npy'), arr)
  info['vidB'] = {'split': 'train', 'frames': 21, 'failed': [20]}

  # vidC (test): per-frame .npy with a zero confidence.
  lm_dir = os.path.join(root, 'test', 'vidC', 'landmarks')
  os.makedirs(lm_dir, exist_ok=True)
  for f in range(5):
    pts = frame_landmarks(f + 2, size)
    save(os.path.join(frames_dir('test', 'vidC'), f'{f:03d}.png'), face_frame(pts, hw, 120))
    p3 = np.concatenate([pts, np.ones((68, 1))], 1)
    if f == 2:
      p3[30, 2] = 0.0
    np.save(os.path.join(lm_dir, f'{f:03d}.npy'), p3)
  info['vidC'] = {'split': 'test', 'frames': 5, 'failed': [2]}
  return info
