"""FaceForensics videos -> tasks: clips, clip augmentation, face crops and maps.

Per video (frames and landmarks read by :mod:`bil_jax.data.face_video`):
frames whose landmarks failed are dropped and counted; training videos are
cut into ``clips`` contiguous clips, clips 1.. each get one random
augmentation drawn from (seed, video, clip) (validation and test videos are one
unaugmented task each); ``frames_per_clip`` evenly
spaced good frames are kept per task; each frame is cropped to the square
around its landmarks with ``margin``, resized to H x W, and its 7-class map
rasterised (see :mod:`bil_jax.data.faceforensics` for the whole recipe).
"""
import dataclasses
import os
import zlib
from typing import Dict, Iterator, List, Sequence, Tuple

import numpy as np
from PIL import Image
from PIL import ImageEnhance

from bil_jax.data import face_video
from bil_jax.data import holdout
from bil_jax.data import image_io
from bil_jax.data import landmarks as lm
from bil_jax.data import task_builder


@dataclasses.dataclass(frozen=True)
class FaceParams:
  """Build parameters (all part of the builder config name)."""
  height: int = 128
  width: int = 128
  margin: float = 0.15
  clips: int = 7
  frames_per_clip: int = 30
  min_frames: int = 25
  seed: int = 0


def clip_rng(seed: int, video: str, clip: int) -> np.random.Generator:
  """Deterministic generator of one clip (stable across Python runs)."""
  return np.random.default_rng(
      np.random.SeedSequence([int(seed), zlib.crc32(video.encode('utf-8')),
                              int(clip)]))


def sample_clip_augmentation(rng: np.random.Generator) -> Dict[str, float]:
  """One clip's augmentation: flip, crop zoom/shift and colour factors."""
  return {
      'flip': float(rng.random() < 0.5),
      'scale': float(rng.uniform(0.9, 1.2)),
      'shift_x': float(rng.uniform(-0.05, 0.05)),
      'shift_y': float(rng.uniform(-0.05, 0.05)),
      'brightness': float(rng.uniform(0.7, 1.3)),
      'contrast': float(rng.uniform(0.7, 1.3)),
      'saturation': float(rng.uniform(0.6, 1.4)),
      'hue': float(rng.uniform(-0.06, 0.06)),
  }


IDENTITY = {
    'flip': 0.0, 'scale': 1.0, 'shift_x': 0.0, 'shift_y': 0.0, 'brightness': 1.0, 'contrast': 1.0,
    'saturation': 1.0, 'hue': 0.0
}


def apply_colour(image: np.ndarray, aug: Dict[str, float]) -> np.ndarray:
  """Brightness, contrast, saturation and hue shift: uint8 [H, W, 3]."""
  if all(aug[k] == IDENTITY[k] for k in ('brightness', 'contrast', 'saturation', 'hue')):
    return image
  im = Image.fromarray(image)
  im = ImageEnhance.Brightness(im).enhance(aug['brightness'])
  im = ImageEnhance.Contrast(im).enhance(aug['contrast'])
  im = ImageEnhance.Color(im).enhance(aug['saturation'])
  if aug['hue']:
    hsv = np.asarray(im.convert('HSV')).copy()
    hsv[..., 0] = (hsv[..., 0].astype(np.int32) + int(round(aug['hue'] * 255))) % 256
    im = Image.fromarray(hsv, 'HSV').convert('RGB')
  return np.asarray(im, np.uint8)


def make_pair(frame: np.ndarray, points: np.ndarray, params: FaceParams,
              aug: Dict[str, float]) -> Tuple[np.ndarray, np.ndarray]:
  """Crop, resize, rasterise and augment one frame.

  Args:
    frame: uint8 [h, w, 3].
    points: float [68, 2|3] landmarks in frame pixels.
    params: sizes and margin.
    aug: a clip augmentation (IDENTITY for none).

  Returns:
    (uint8 [H, W] class map, uint8 [H, W, 3] image).
  """
  box = lm.bounding_box(points, params.margin, aug['scale'], (aug['shift_x'], aug['shift_y']))
  image, pts = lm.crop_face(frame, points, box, params.height, params.width)
  seg = lm.rasterise(pts, params.height, params.width)
  image = apply_colour(image, aug)
  if aug['flip']:
    image, seg = image[:, ::-1], seg[:, ::-1]
  return np.ascontiguousarray(seg), np.ascontiguousarray(image)


def evenly(items: Sequence, k: int) -> list:
  """k evenly spaced items (all of them if k <= 0 or k >= len)."""
  if k <= 0 or k >= len(items):
    return list(items)
  return [items[i] for i in np.linspace(0, len(items) - 1, k).round().astype(int)]


def plan_tasks(video: str, split: str, valid: Sequence[bool],
               params: FaceParams) -> List[Tuple[str, List[int], int]]:
  """Which frames make which task: [(task name, frame positions, clip)].

  Training videos are cut into ``clips`` contiguous clips over ALL frames
  (failed ones included, so clip boundaries do not depend on the detector);
  each task keeps ``frames_per_clip`` evenly spaced good frames.  Tasks with
  fewer than ``min_frames`` good frames are left out (the caller counts them).
  """
  positions = np.arange(len(valid))
  chunks = (np.array_split(positions, params.clips) if split == 'train' else [positions])
  plan = []
  for c, chunk in enumerate(chunks):
    good = [int(p) for p in chunk if valid[p]]
    name = f'{video}_c{c}' if split == 'train' else video
    plan.append((name, evenly(good, params.frames_per_clip), c))
  return plan


def video_tasks(
    video_dir: str, split: str, params: FaceParams, stats: Dict[str, int],
    video_extensions: Sequence[str] = face_video.VIDEO_EXTENSIONS) -> Iterator[task_builder.Task]:
  """Yields the tasks of one video; updates ``stats`` counters.

  Without frames/, the video file is the first one ending in video_extensions.
  """
  video = os.path.basename(os.path.normpath(video_dir))
  if os.path.isdir(os.path.join(video_dir, 'frames')):
    frames = face_video.list_frames(video_dir)
    numbers = [n for n, _ in frames]
    video_file = None
  else:
    video_file = face_video.find_video_file(video_dir, video_extensions)
    if video_file is None:
      raise image_io.DataError(video_dir, 'has neither frames/ nor a video file')
    numbers = list(range(face_video.landmark_frame_count(video_dir)))
    frames = None
  points = face_video.load_landmarks(video_dir, numbers)
  valid = [lm.is_valid(p) for p in points]
  stats['frames'] += len(valid)
  stats['failed_frames'] += len(valid) - sum(valid)
  plan = plan_tasks(video, split, valid, params)
  wanted = sorted({p for _, pos, _ in plan for p in pos})
  if frames is not None:
    images = {p: image_io.read_rgb(frames[p][1]) for p in wanted}
  else:
    images = face_video.read_video(video_file, wanted)
    missing = [p for p in wanted if p not in images]
    if missing:
      raise image_io.DataError(video_file, f'has no frame {missing[0]} although '
                               'landmarks exist for it')
  for name, pos, clip in plan:
    stats['tasks'] += 1
    if len(pos) < params.min_frames:
      stats['dropped_tasks'] += 1
      continue
    aug = (IDENTITY if split != 'train' or clip == 0 else sample_clip_augmentation(
        clip_rng(params.seed, video, clip)))
    pairs = [make_pair(images[p], points[p], params, aug) for p in pos]
    maps, imgs = zip(*pairs)
    yield name, np.stack(maps), np.stack(imgs)


def list_videos(manual_dir: str, folder: str) -> List[str]:
  """Sorted video folder names of MANUAL_DIR/<folder>; image_io.DataError if missing or empty."""
  return image_io.subfolders(os.path.join(manual_dir, folder),
                             '{train,test}/<video>/ (and optionally val/<video>/)', 'video folders')


def generate_tasks(manual_dir: str, split: str, params: FaceParams,
                   video_extensions: Sequence[str] = face_video.VIDEO_EXTENSIONS,
                   val_fraction: float = 0.0) -> Iterator[task_builder.Task]:
  """All tasks of builder split ``split``; prints the counts of dropped frames and tasks.

  'val' videos are made into tasks as test videos are (one unaugmented task each): from
  MANUAL_DIR/val/ when ``val_fraction`` is 0, else the held-out fraction of the training
  videos, whose clips 'train' then leaves out (:func:`holdout.items`).
  """
  folder, videos = holdout.items(split, lambda f: list_videos(manual_dir, f), not val_fraction,
                                 val_fraction, lambda f: os.path.join(manual_dir, f))
  split_dir = os.path.join(manual_dir, folder)
  stats = {'frames': 0, 'failed_frames': 0, 'tasks': 0, 'dropped_tasks': 0}
  for v in videos:
    yield from video_tasks(os.path.join(split_dir, v), split, params, stats, video_extensions)
  print(
      f'faceforensics/{split}: {len(videos)} videos; dropped '
      f'{stats["failed_frames"]} of {stats["frames"]} frames whose landmarks '
      f'failed (missing, NaN or zero confidence); dropped {stats["dropped_tasks"]} of {stats["tasks"]} '
      f'{"clips" if split == "train" else "videos"} with fewer than '
      f'{params.min_frames} good frames', flush=True)
  if stats['tasks'] == stats['dropped_tasks']:
    raise image_io.DataError(split_dir, f'no task has {params.min_frames} frames with '
                             'landmarks')
