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
  val/<video>/...                              optional validation videos
                                               (else data.val_fraction of
                                               the training videos)
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
     deterministic; validation and test videos are one task each,
     unaugmented;
  3. ``frames_per_clip`` evenly spaced good frames are kept per task (0: all);
     tasks with fewer than ``min_frames`` good frames are dropped and counted;
  4. each kept frame is cropped to the square around its landmarks' box with
     ``margin`` on every side, resized to H x W, and its map rasterised from
     the landmarks moved into the crop.

The counts of dropped frames and tasks are printed per split.  Registered as
data.name = 'faceforensics' (data.num_classes must be 7).

Reading a video is :mod:`bil_jax.data.face_video`, steps 1-4
:mod:`bil_jax.data.face_clips`; this module holds the TFDS builder and the
registry loader.
"""
import dataclasses
import os
import re
from typing import Dict, Iterator

import tensorflow_datasets as tfds

from bil_jax.data import face_clips
from bil_jax.data import face_video
from bil_jax.data import holdout
from bil_jax.data import landmarks as lm
from bil_jax.data import paired_folder
from bil_jax.data import registry
from bil_jax.data import task_builder
from bil_jax.data import tasks as tasks_lib

SPLITS = ('train', 'test')  # the folders of the raw download (data_prep)
WHAT = ('FaceForensics frames and landmarks: {train,test}/<video>/frames/ and '
        '<video>/landmarks/ or landmarks.npy (see docs/datasets.md)')


def generate_tasks(manual_dir: str, split: str, params: face_clips.FaceParams,
                   val_fraction: float = 0.0) -> Iterator[task_builder.Task]:
  """All tasks of builder split ``split`` (:func:`face_clips.generate_tasks`); a video
  without frames/ is read from its file ending in ``face_video.VIDEO_EXTENSIONS``."""
  return face_clips.generate_tasks(manual_dir, split, params, face_video.VIDEO_EXTENSIONS,
                                   val_fraction)


# ---------------------------------------------------------------------------
# TFDS builder and loader
# ---------------------------------------------------------------------------


@dataclasses.dataclass(eq=False)
class FaceForensicsConfig(tfds.core.BuilderConfig):
  params: face_clips.FaceParams = dataclasses.field(default_factory=face_clips.FaceParams)
  val_fraction: float = 0.0  # 0: validation videos from MANUAL_DIR/val/


def make_builder_config(params: face_clips.FaceParams, manual_dir: str = '',
                        val_fraction: float = 0.1) -> FaceForensicsConfig:
  """The config of ``params``; its ``val_fraction`` is 0 when MANUAL_DIR/val/ exists."""
  p = params
  val_folder = holdout.has_val_folder(manual_dir)
  name = (f'h{p.height}_w{p.width}_m{int(round(p.margin * 100))}_c{p.clips}'
          f'_f{p.frames_per_clip}_min{p.min_frames}_s{p.seed}_'
          f'{holdout.source_tag(val_folder, val_fraction)}')
  return FaceForensicsConfig(name=name, description=f'FaceForensics {name}', params=params,
                             val_fraction=0.0 if val_folder else val_fraction)


def params_from_data_cfg(data_cfg) -> face_clips.FaceParams:
  return face_clips.FaceParams(height=int(data_cfg.image_height), width=int(data_cfg.image_width),
                               margin=float(data_cfg.get('face_margin', 0.15)),
                               clips=int(data_cfg.get('clips_per_video', 7)),
                               frames_per_clip=int(data_cfg.get('frames_per_clip', 30)),
                               min_frames=int(data_cfg.get('min_frames', 25)),
                               seed=int(data_cfg.get('prep_seed', 0)))


class FaceForensicsTasks(task_builder.ManualTaskBuilder):
  """FaceForensics clips (train) and videos (val, test); one example = one task."""

  MANUAL_DOWNLOAD_INSTRUCTIONS = WHAT
  HOMEPAGE = 'https://github.com/ondyari/FaceForensics'

  def image_hw(self):
    """(H, W) of the face crops, from the config's face_clips.FaceParams."""
    return self.builder_config.params.height, self.builder_config.params.width

  def _tasks(self, manual_dir: str, split: str):
    cfg = self.builder_config
    return generate_tasks(manual_dir, split, cfg.params, cfg.val_fraction)


def prepare_data(data_cfg, workdir: str) -> Dict[str, tfds.core.DatasetBuilder]:
  """Prepares FaceForensics for data_cfg; {split: builder}."""
  builder = paired_folder.prepare(
      FaceForensicsTasks,
      make_builder_config(params_from_data_cfg(data_cfg), data_cfg.manual_dir,
                          holdout.val_fraction(data_cfg)),
      paired_folder.default_data_dir(data_cfg, workdir), data_cfg.manual_dir, WHAT)
  return {s: builder for s in holdout.SPLITS}


@registry.register('faceforensics')
def load_faceforensics(data_cfg, split: str, workdir: str) -> tasks_lib.TaskSet:
  """Registry loader for data.name = 'faceforensics'."""
  if int(data_cfg.num_classes) != lm.NUM_FACE_CLASSES:
    raise ValueError(f'FaceForensics maps have {lm.NUM_FACE_CLASSES} classes '
                     f'({", ".join(lm.FACE_CLASSES)}); set data.num_classes='
                     f'{lm.NUM_FACE_CLASSES}, not {data_cfg.num_classes}')
  builder = prepare_data(data_cfg, workdir)[split]
  ts = tasks_lib.taskset_from_tfds(builder, split, lm.NUM_FACE_CLASSES)
  root = data_cfg.manual_dir or '<manual_dir>'
  folder = paired_folder.split_folder(split, builder.builder_config.val_fraction)

  def source(name):
    video = re.sub(r'_c\d+$', '', name) if split == 'train' else name
    return os.path.join(root, folder, video)

  return paired_folder.check_task_sizes(ts, data_cfg, split, source)
