"""FaceForensics videos + facial landmarks -> 7-class face translation tasks.

Sec. 5.1: 704 training and 150 test videos; OpenPose facial landmarks give
segmentation maps with 7 classes (:mod:`bil_jax.data.landmarks`); "the exact
face region is cropped according to the coordinate boundary of facial
landmarks and then resized to 128x128"; "we divide each video in the training
set into 7 short clips and apply different random image augmentations to 6 of
them.  For each video in the test set, we just use the original one.  After
filtering out the facial landmark failures, we have 4,767 video clips for
training and 148 for test".

Layout (``manual_dir``; data_prep/prepare_faceforensics.py writes it from the
raw videos)::

  {train,test}/<video>/frames/<...N>.png|.jpg  frames, numbered by the last
                                               integer N in the name
  {train,test}/<video>/landmarks/<...N>_keypoints.json   OpenPose face JSON,
      or <...N>.json / <...N>.npy ([68, 2] or [68, 3])   matched to frame N
  {train,test}/<video>/landmarks.npy           or one [F, 68, 2|3] array,
                                               row f for the f-th frame
  (instead of frames/, a video file <video>/video.mp4 is read when imageio
  with an ffmpeg or pyav plugin is installed; landmarks then count frames
  from 0.)

Per video:
  1. landmarks per frame; frames whose landmarks failed (missing, NaN/inf,
     zero confidence) are dropped and counted;
  2. training videos are cut into ``clips`` (7) contiguous clips in time;
     clip 0 is as is and clips 1..6 each get ONE random augmentation
     (horizontal flip, crop zoom and shift, brightness, contrast, saturation,
     hue) drawn from (seed, video name, clip index), so the build is
     deterministic; test videos are one task each, unaugmented;
  3. ``frames_per_clip`` evenly spaced good frames are kept per task (0: all);
     tasks with fewer than ``min_frames`` good frames are dropped and counted;
  4. each kept frame is cropped to the square around its landmarks' box with
     ``margin`` on every side, resized to H x W, and its map rasterised from
     the landmarks moved into the crop.

The counts of dropped frames and tasks are printed per split.  Registered as
data.name = 'faceforensics' (data.num_classes must be 7).
"""
import dataclasses
import os
import re
import zlib
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image
from PIL import ImageEnhance
import tensorflow_datasets as tfds

from bil_jax.data import image_io
from bil_jax.data import landmarks as lm
from bil_jax.data import paired_folder
from bil_jax.data import registry
from bil_jax.data import tasks as tasks_lib

DataError = image_io.DataError
SPLITS = ('train', 'test')
VIDEO_EXTENSIONS = ('.mp4', '.avi', '.mov', '.mkv', '.webm')
WHAT = ('FaceForensics frames and landmarks: {train,test}/<video>/frames/ and '
        '<video>/landmarks/ or landmarks.npy (see docs/datasets.md)')
_INT = re.compile(r'(\d+)')


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


# ---------------------------------------------------------------------------
# Frames and landmarks of one video
# ---------------------------------------------------------------------------


def frame_number(path: str) -> int:
  """The last integer in a file name ('vid_000000000012_keypoints' -> 12)."""
  stem = os.path.splitext(os.path.basename(path))[0]
  if stem.endswith('_keypoints'):
    stem = stem[:-len('_keypoints')]
  nums = _INT.findall(stem)
  if not nums:
    raise DataError(path, 'no frame number in the file name')
  return int(nums[-1])


def list_frames(video_dir: str) -> List[Tuple[int, str]]:
  """Sorted (frame number, path) of video_dir/frames/; DataError on a clash."""
  frames_dir = os.path.join(video_dir, 'frames')
  out = {}
  for path in image_io.list_images(frames_dir).values():
    n = frame_number(path)
    if n in out:
      raise DataError(path, f'frame number {n} also used by {out[n]}')
    out[n] = path
  if not out:
    raise DataError(frames_dir, 'has no frames')
  return sorted(out.items())


def find_video_file(video_dir: str) -> Optional[str]:
  for name in sorted(os.listdir(video_dir)):
    if os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS:
      return os.path.join(video_dir, name)
  return None


def read_landmark_file(path: str) -> Optional[np.ndarray]:
  """[68, 2|3] float or None (nobody detected) from a .json or .npy file."""
  if path.endswith('.npy'):
    return lm.read_npy(path)
  return lm.read_openpose_json(path)


def load_landmarks(video_dir: str,
                   numbers: Sequence[int]) -> List[Optional[np.ndarray]]:
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
      raise DataError(arr_path, f'cannot read landmarks '
                      f'({image_io.first_line(e)})') from None
    if (arr.ndim != 3 or arr.shape[1] < lm.NUM_POINTS
        or arr.shape[2] not in (2, 3)):
      raise DataError(arr_path, f'landmarks have shape {arr.shape}; expected '
                      '[frames, 68, 2 or 3]')
    if arr.shape[0] != len(numbers):
      raise DataError(arr_path, f'has {arr.shape[0]} rows for {len(numbers)} '
                      'frames')
    return [a.astype(np.float32) for a in arr]
  if not os.path.isdir(lm_dir):
    raise DataError(video_dir, 'has no landmarks/ folder or landmarks.npy')
  files = {}
  for name in sorted(os.listdir(lm_dir)):
    if name.endswith(('.json', '.npy')):
      path = os.path.join(lm_dir, name)
      files.setdefault(frame_number(path), path)
  return [read_landmark_file(files[n]) if n in files else None
          for n in numbers]


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
    raise DataError(path, 'reading videos needs imageio; extract the frames '
                    'to <video>/frames/ instead') from None
  except Exception as e:  # pylint: disable=broad-except
    raise DataError(path, f'cannot read video ({image_io.first_line(e)}); '
                    'install imageio-ffmpeg or extract the frames to '
                    '<video>/frames/') from None


# ---------------------------------------------------------------------------
# Clips, augmentation and frames -> pairs
# ---------------------------------------------------------------------------


def clip_rng(seed: int, video: str, clip: int) -> np.random.Generator:
  """Deterministic generator of one clip (stable across Python runs)."""
  return np.random.default_rng(np.random.SeedSequence(
      [int(seed), zlib.crc32(video.encode('utf-8')), int(clip)]))


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


IDENTITY = {'flip': 0.0, 'scale': 1.0, 'shift_x': 0.0, 'shift_y': 0.0,
            'brightness': 1.0, 'contrast': 1.0, 'saturation': 1.0, 'hue': 0.0}


def apply_colour(image: np.ndarray, aug: Dict[str, float]) -> np.ndarray:
  """Brightness, contrast, saturation and hue shift: uint8 [H, W, 3]."""
  if all(aug[k] == IDENTITY[k] for k in ('brightness', 'contrast',
                                         'saturation', 'hue')):
    return image
  im = Image.fromarray(image)
  im = ImageEnhance.Brightness(im).enhance(aug['brightness'])
  im = ImageEnhance.Contrast(im).enhance(aug['contrast'])
  im = ImageEnhance.Color(im).enhance(aug['saturation'])
  if aug['hue']:
    hsv = np.asarray(im.convert('HSV')).copy()
    hsv[..., 0] = (hsv[..., 0].astype(np.int32)
                   + int(round(aug['hue'] * 255))) % 256
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
  box = lm.bounding_box(points, params.margin, aug['scale'],
                        (aug['shift_x'], aug['shift_y']))
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
  chunks = (np.array_split(positions, params.clips) if split == 'train'
            else [positions])
  plan = []
  for c, chunk in enumerate(chunks):
    good = [int(p) for p in chunk if valid[p]]
    name = f'{video}_c{c}' if split == 'train' else video
    plan.append((name, evenly(good, params.frames_per_clip), c))
  return plan


def video_tasks(video_dir: str, split: str, params: FaceParams,
                stats: Dict[str, int]) -> Iterator[paired_folder.Task]:
  """Yields the tasks of one video; updates ``stats`` counters."""
  video = os.path.basename(os.path.normpath(video_dir))
  if os.path.isdir(os.path.join(video_dir, 'frames')):
    frames = list_frames(video_dir)
    numbers = [n for n, _ in frames]
    video_file = None
  else:
    video_file = find_video_file(video_dir)
    if video_file is None:
      raise DataError(video_dir, 'has neither frames/ nor a video file')
    arr_path = os.path.join(video_dir, 'landmarks.npy')
    if os.path.isfile(arr_path):
      count = np.load(arr_path, mmap_mode='r').shape[0]
    else:
      lm_dir = os.path.join(video_dir, 'landmarks')
      nums = [frame_number(f) for f in os.listdir(lm_dir)] if os.path.isdir(
          lm_dir) else []
      count = max(nums) + 1 if nums else 0
    numbers = list(range(count))
    frames = None
  points = load_landmarks(video_dir, numbers)
  valid = [lm.is_valid(p) for p in points]
  stats['frames'] += len(valid)
  stats['failed_frames'] += len(valid) - sum(valid)
  plan = plan_tasks(video, split, valid, params)
  wanted = sorted({p for _, pos, _ in plan for p in pos})
  if frames is not None:
    images = {p: image_io.read_rgb(frames[p][1]) for p in wanted}
  else:
    images = read_video(video_file, wanted)
    missing = [p for p in wanted if p not in images]
    if missing:
      raise DataError(video_file, f'has no frame {missing[0]} although '
                      'landmarks exist for it')
  for name, pos, clip in plan:
    stats['tasks'] += 1
    if len(pos) < params.min_frames:
      stats['dropped_tasks'] += 1
      continue
    aug = (IDENTITY if split != 'train' or clip == 0 else
           sample_clip_augmentation(clip_rng(params.seed, video, clip)))
    pairs = [make_pair(images[p], points[p], params, aug) for p in pos]
    maps, imgs = zip(*pairs)
    yield name, np.stack(maps), np.stack(imgs)


def generate_tasks(manual_dir: str, split: str,
                   params: FaceParams) -> Iterator[paired_folder.Task]:
  """All tasks of a split; prints the counts of dropped frames and tasks."""
  split_dir = os.path.join(manual_dir, split)
  if not os.path.isdir(split_dir):
    raise DataError(split_dir, 'missing; expected {train,test}/<video>/')
  videos = sorted(d for d in os.listdir(split_dir)
                  if os.path.isdir(os.path.join(split_dir, d)))
  if not videos:
    raise DataError(split_dir, 'has no video folders')
  stats = {'frames': 0, 'failed_frames': 0, 'tasks': 0, 'dropped_tasks': 0}
  for v in videos:
    yield from video_tasks(os.path.join(split_dir, v), split, params, stats)
  print(f'faceforensics/{split}: {len(videos)} videos; dropped '
        f'{stats["failed_frames"]} of {stats["frames"]} frames whose landmarks '
        f'failed (missing, NaN or zero confidence); dropped {stats["dropped_tasks"]} of {stats["tasks"]} '
        f'{"clips" if split == "train" else "videos"} with fewer than '
        f'{params.min_frames} good frames', flush=True)
  if stats['tasks'] == stats['dropped_tasks']:
    raise DataError(split_dir, f'no task has {params.min_frames} frames with '
                    'landmarks')


# ---------------------------------------------------------------------------
# TFDS builder and loader
# ---------------------------------------------------------------------------


@dataclasses.dataclass(eq=False)
class FaceForensicsConfig(tfds.core.BuilderConfig):
  params: FaceParams = dataclasses.field(default_factory=FaceParams)


def make_builder_config(params: FaceParams) -> FaceForensicsConfig:
  p = params
  name = (f'h{p.height}_w{p.width}_m{int(round(p.margin * 100))}_c{p.clips}'
          f'_f{p.frames_per_clip}_min{p.min_frames}_s{p.seed}')
  return FaceForensicsConfig(name=name, description=f'FaceForensics {name}',
                             params=params)


def params_from_data_cfg(data_cfg) -> FaceParams:
  return FaceParams(
      height=int(data_cfg.image_height), width=int(data_cfg.image_width),
      margin=float(data_cfg.get('face_margin', 0.15)),
      clips=int(data_cfg.get('clips_per_video', 7)),
      frames_per_clip=int(data_cfg.get('frames_per_clip', 30)),
      min_frames=int(data_cfg.get('min_frames', 25)),
      seed=int(data_cfg.get('prep_seed', 0)))


class FaceForensicsTasks(paired_folder.ManualTaskBuilder):
  """FaceForensics clips (train) and videos (test); one example = one task."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = WHAT

  def _info(self) -> tfds.core.DatasetInfo:
    p = self.builder_config.params
    return self.dataset_info_from_configs(
        description=__doc__.split('\n')[0],
        features=tasks_lib.TASK_FEATURES(p.height, p.width),
        homepage='https://github.com/ondyari/FaceForensics')

  def _split_generators(self, dl_manager):
    manual = str(dl_manager.manual_dir)
    return {s: self._generate_examples(manual, s) for s in SPLITS}

  def _generate_examples(self, manual_dir: str, split: str):
    for name, maps, images in generate_tasks(manual_dir, split,
                                             self.builder_config.params):
      yield paired_folder.task_example(name, maps, images)


def prepare_data(data_cfg, workdir: str) -> Dict[str, tfds.core.DatasetBuilder]:
  """Prepares FaceForensics for data_cfg; {split: builder}."""
  builder = paired_folder.prepare(
      FaceForensicsTasks, make_builder_config(params_from_data_cfg(data_cfg)),
      paired_folder.default_data_dir(data_cfg, workdir), data_cfg.manual_dir,
      WHAT)
  return {s: builder for s in SPLITS}


@registry.register('faceforensics')
def load_faceforensics(data_cfg, split: str,
                       workdir: str) -> tasks_lib.TaskSet:
  """Registry loader for data.name = 'faceforensics'."""
  if int(data_cfg.num_classes) != lm.NUM_FACE_CLASSES:
    raise ValueError(f'FaceForensics maps have {lm.NUM_FACE_CLASSES} classes '
                     f'({", ".join(lm.FACE_CLASSES)}); set data.num_classes='
                     f'{lm.NUM_FACE_CLASSES}, not {data_cfg.num_classes}')
  builder = prepare_data(data_cfg, workdir)[split]
  ts = tasks_lib.taskset_from_tfds(builder, split, lm.NUM_FACE_CLASSES)
  root = data_cfg.manual_dir or '<manual_dir>'

  def source(name):
    video = re.sub(r'_c\d+$', '', name) if split == 'train' else name
    return os.path.join(root, split, video)

  return paired_folder.check_task_sizes(ts, data_cfg, split, source)
