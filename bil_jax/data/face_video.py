"""One FaceForensics video on disk: its frames (a frames/ folder or a video
file) and its facial landmarks per frame.

Layout of a video folder (see :mod:`bil_jax.data.faceforensics`)::

  <video>/frames/<...N>.png|.jpg               frames, numbered by the last
                                               integer N in the name
  <video>/landmarks/<...N>_keypoints.json      OpenPose face JSON, or
      <...N>.json / <...N>.npy ([68, 2|3])     matched to frame N
  <video>/landmarks.npy                        or one [F, 68, 2|3] array
  <video>/video.mp4                            instead of frames/ (needs
                                               imageio with ffmpeg or pyav)
"""
import os
import re
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from bil_jax.data import image_io
from bil_jax.data import landmarks as lm

VIDEO_EXTENSIONS = ('.mp4', '.avi', '.mov', '.mkv', '.webm')
_INT = re.compile(r'(\d+)')


def frame_number(path: str) -> int:
  """The last integer in a file name ('vid_000000000012_keypoints' -> 12)."""
  stem = os.path.splitext(os.path.basename(path))[0]
  if stem.endswith('_keypoints'):
    stem = stem[:-len('_keypoints')]
  nums = _INT.findall(stem)
  if not nums:
    raise image_io.DataError(path, 'no frame number in the file name')
  return int(nums[-1])


def list_frames(video_dir: str) -> List[Tuple[int, str]]:
  """Sorted (frame number, path) of video_dir/frames/; image_io.DataError on a clash."""
  frames_dir = os.path.join(video_dir, 'frames')
  out = {}
  for path in image_io.list_images(frames_dir).values():
    n = frame_number(path)
    if n in out:
      raise image_io.DataError(path, f'frame number {n} also used by {out[n]}')
    out[n] = path
  if not out:
    raise image_io.DataError(frames_dir, 'has no frames')
  return sorted(out.items())


def find_video_file(video_dir: str, extensions: Sequence[str] = VIDEO_EXTENSIONS) -> Optional[str]:
  """The first file of video_dir (by name) ending in one of ``extensions``."""
  for name in sorted(os.listdir(video_dir)):
    if os.path.splitext(name)[1].lower() in extensions:
      return os.path.join(video_dir, name)
  return None


def read_landmark_file(path: str) -> Optional[np.ndarray]:
  """[68, 2|3] float or None (nobody detected) from a .json or .npy file."""
  if path.endswith('.npy'):
    return lm.read_npy(path)
  return lm.read_openpose_json(path)


def load_landmarks(video_dir: str, numbers: Sequence[int]) -> List[Optional[np.ndarray]]:
  """Landmarks for the given frame numbers (None where missing).

  From video_dir/landmarks.npy ([F, 68, 2|3], row f = the f-th frame of
  ``numbers``) or video_dir/landmarks/ (files matched by frame number).
  """
  arr_path = os.path.join(video_dir, 'landmarks.npy')
  lm_dir = os.path.join(video_dir, 'landmarks')
  if os.path.isfile(arr_path):
    try:
      arr = np.load(arr_path, allow_pickle=False)
    except (OSError, ValueError) as e:
      raise image_io.DataError(arr_path, f'cannot read landmarks '
                               f'({image_io.first_line(e)})') from None
    if (arr.ndim != 3 or arr.shape[1] < lm.NUM_POINTS or arr.shape[2] not in (2, 3)):
      raise image_io.DataError(
          arr_path, f'landmarks have shape {arr.shape}; expected '
          '[frames, 68, 2 or 3]')
    if arr.shape[0] != len(numbers):
      raise image_io.DataError(arr_path, f'has {arr.shape[0]} rows for {len(numbers)} '
                               'frames')
    return [a.astype(np.float32) for a in arr]
  if not os.path.isdir(lm_dir):
    raise image_io.DataError(video_dir, 'has no landmarks/ folder or landmarks.npy')
  files = {}
  for name in sorted(os.listdir(lm_dir)):
    if name.endswith(('.json', '.npy')):
      path = os.path.join(lm_dir, name)
      files.setdefault(frame_number(path), path)
  return [read_landmark_file(files[n]) if n in files else None for n in numbers]


def read_video(path: str, keep: Sequence[int]) -> Dict[int, np.ndarray]:
  """Frames ``keep`` (0-based indices) of a video file: {index: uint8 [h,w,3]}.

  Needs imageio with an ffmpeg (imageio-ffmpeg) or pyav plugin.
  """
  try:
    import imageio.v3 as iio  # pylint: disable=g-import-not-at-top
    keep = set(int(k) for k in keep)
    out = {}
    for i, frame in enumerate(iio.imiter(path)):
      if i in keep:
        out[i] = np.asarray(frame, np.uint8)[..., :3]
      if len(out) == len(keep):
        break
    return out
  except ImportError:
    raise image_io.DataError(
        path, 'reading videos needs imageio; extract the frames '
        'to <video>/frames/ instead') from None
  except Exception as e:  # pylint: disable=broad-except
    raise image_io.DataError(
        path, f'cannot read video ({image_io.first_line(e)}); '
        'install imageio-ffmpeg or extract the frames to '
        '<video>/frames/') from None


def landmark_frame_count(video_dir: str) -> int:
  """Frames a video file has landmarks for: rows of landmarks.npy, else 1 + the
  largest frame number in landmarks/ (0 without landmarks)."""
  arr_path = os.path.join(video_dir, 'landmarks.npy')
  if os.path.isfile(arr_path):
    return np.load(arr_path, mmap_mode='r').shape[0]
  lm_dir = os.path.join(video_dir, 'landmarks')
  nums = [frame_number(f) for f in os.listdir(lm_dir)] if os.path.isdir(lm_dir) else []
  return max(nums) + 1 if nums else 0
