r"""FaceForensics videos -> the frame/landmark layout the builder reads.

  python data_prep/prepare_faceforensics.py --videos=/data/FaceForensics \
    --out=/data/faceforensics [--openpose=/data/openpose_json] [--detect]

--videos holds {train,test}/ (FaceForensics' val/ may be used as test/ by
linking it), each with the videos of that split anywhere below it (video files
.mp4/.avi/..., or folders of already extracted frames).  --subdir=original
restricts the search to .../original/ folders (FaceForensics' unaltered
videos).  For every video this writes::

  OUT/<split>/<video>/frames/00000.png, 00001.png, ...   (every --every-th frame)
  OUT/<split>/<video>/landmarks/...                      from --openpose, or
  OUT/<split>/<video>/landmarks.npy  [F, 68, 3]          from --detect

Landmarks, one of:
  * --openpose=DIR: OpenPose's --face --write_json output, DIR/<video>/
    *_keypoints.json (one file per frame, numbered from 0 in video order).
    The files are copied; frame numbers are matched by the builder.
  * --detect: dlib's frontal face detector and 68-point shape predictor, when
    the optional `faces` extra is installed (pip install -e .[faces], i.e. dlib
    and face_recognition_models; or --predictor=shape_predictor_68_face_landmarks.dat).
    Frames without a face get a NaN row (dropped and counted by the builder).
  * neither: put landmarks there yourself (OpenPose JSON or [68, 2|3] .npy
    per frame, or one landmarks.npy per video; docs/datasets.md).

Reading video files needs imageio with an ffmpeg plugin (pip install
imageio-ffmpeg); folders of frames need nothing.  Then prepare the TFDS data:

  python data_prep/prepare.py --config=configs/faces.py \
    --manual_dir=/data/faceforensics --data_dir=/data/tfds
"""
import argparse
import os
import shutil
import sys
from typing import Callable, Iterator, List, Optional, Tuple

import numpy as np

if __package__ in (None, ''):
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
from PIL import Image

from bil_jax.data import face_video
from bil_jax.data import faceforensics
from bil_jax.data import image_io

Detector = Callable[[np.ndarray], Optional[np.ndarray]]  # image -> [68, 2|3]


def find_videos(split_dir: str, subdir: str = '') -> List[Tuple[str, str]]:
  """Sorted (video name, path) of the video files / frame folders below."""
  out = {}
  for dirpath, dirnames, filenames in os.walk(split_dir):
    dirnames.sort()
    if subdir and subdir not in os.path.relpath(dirpath, split_dir).split(os.sep):
      continue
    for fn in sorted(filenames):
      stem, ext = os.path.splitext(fn)
      if ext.lower() in face_video.VIDEO_EXTENSIONS:
        out.setdefault(stem, os.path.join(dirpath, fn))
    if any(os.path.splitext(f)[1].lower() in image_io.IMAGE_EXTENSIONS
           for f in filenames) and dirpath != split_dir:
      out.setdefault(os.path.basename(dirpath), dirpath)  # a frame folder
  return sorted(out.items())


def iter_frames(source: str) -> Iterator[np.ndarray]:
  """uint8 [h, w, 3] frames of a video file or a folder of frames, in order."""
  if os.path.isdir(source):
    frames = sorted(image_io.list_images(source).values(), key=face_video.frame_number)
    for path in frames:
      yield image_io.read_rgb(path)
    return
  try:
    import imageio.v3 as iio
    for frame in iio.imiter(source):
      yield np.asarray(frame, np.uint8)[..., :3]
  except Exception as e:  # pylint: disable=broad-except
    raise image_io.DataError(
        source, f'cannot read video '
        f'({image_io.first_line(e)}); pip install '
        'imageio-ffmpeg, or extract the frames') from None


def dlib_detector(predictor_path: str = '') -> Detector:
  """68-point dlib landmarks (the optional `faces` extra); [68, 3] or None."""
  try:
    import dlib
  except ImportError:
    raise SystemExit('error: --detect needs the optional faces extra: pip '
                     'install -e .[faces] (dlib, face_recognition_models)') from None
  if not predictor_path:
    try:
      import face_recognition_models
    except ImportError:
      raise SystemExit('error: --detect needs the 68-point model: pip install '
                       'face_recognition_models, or pass --predictor=PATH to '
                       'shape_predictor_68_face_landmarks.dat') from None
    predictor_path = face_recognition_models.pose_predictor_model_location()
  detect = dlib.get_frontal_face_detector()
  predict = dlib.shape_predictor(predictor_path)

  def run(image: np.ndarray) -> Optional[np.ndarray]:
    rects = detect(image, 1)
    if not rects:
      return None
    rect = max(rects, key=lambda r: r.width() * r.height())
    shape = predict(image, rect)
    return np.array([[p.x, p.y, 1.0] for p in shape.parts()], np.float32)

  return run


def convert_video(source: str, out_dir: str, every: int = 1, max_frames: int = 0,
                  openpose_dir: str = '', detector: Optional[Detector] = None) -> Tuple[int, int]:
  """Writes one video's frames (and landmarks); returns (frames, failed)."""
  frames_dir = os.path.join(out_dir, 'frames')
  os.makedirs(frames_dir, exist_ok=True)
  rows, n, failed = [], 0, 0
  for i, frame in enumerate(iter_frames(source)):
    if i % every:
      continue
    if max_frames and n >= max_frames:
      break
    Image.fromarray(frame).save(os.path.join(frames_dir, f'{i:05d}.png'))
    if detector is not None:
      pts = detector(frame)
      if pts is None:
        failed += 1
        pts = np.full((68, 3), np.nan, np.float32)
      pts = np.asarray(pts, np.float32)
      if pts.shape[1] == 2:
        pts = np.concatenate([pts, np.ones((68, 1), np.float32)], 1)
      rows.append(pts[:68])
    n += 1
  if detector is not None:
    np.save(os.path.join(out_dir, 'landmarks.npy'), np.stack(rows))
  if openpose_dir:
    src = os.path.join(openpose_dir, os.path.basename(out_dir))
    if not os.path.isdir(src):
      raise image_io.DataError(src, 'missing: no OpenPose JSON for this video')
    dst = os.path.join(out_dir, 'landmarks')
    os.makedirs(dst, exist_ok=True)
    for fn in sorted(os.listdir(src)):
      if fn.endswith('.json'):
        shutil.copy(os.path.join(src, fn), os.path.join(dst, fn))
  return n, failed


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--videos', required=True,
                 help='folder with train/ and test/ of videos or frame folders')
  p.add_argument('--out', required=True, help='the manual_dir to write')
  p.add_argument('--subdir', default='', help="only videos in folders of this "
                 "name, e.g. 'original'")
  p.add_argument('--openpose', default='', help='OpenPose JSON: DIR/<video>/')
  p.add_argument('--detect', action='store_true',
                 help='detect 68-point landmarks with dlib (faces extra)')
  p.add_argument('--predictor', default='', help='dlib shape_predictor_68_face_landmarks.dat')
  p.add_argument('--every', type=int, default=1, help='keep every n-th frame')
  p.add_argument('--max_frames', type=int, default=0, help='frames per video (0: all)')
  args = p.parse_args(argv)
  detector = dlib_detector(args.predictor) if args.detect else None
  if not (args.detect or args.openpose):
    print('note: no --openpose or --detect; add landmarks to each '
          '<video>/ yourself (docs/datasets.md)')
  try:
    for split in faceforensics.SPLITS:
      split_dir = os.path.join(args.videos, split)
      if not os.path.isdir(split_dir):
        raise image_io.DataError(split_dir, 'missing; --videos needs train/ '
                                 'and test/')
      videos = find_videos(split_dir, args.subdir)
      total = bad = 0
      for name, source in videos:
        n, f = convert_video(source, os.path.join(args.out, split, name), args.every,
                             args.max_frames, args.openpose, detector)
        total, bad = total + n, bad + f
      print(f'{split}: {len(videos)} videos, {total} frames'
            + (f', no face found in {bad}' if detector else ''))
  except image_io.DataError as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  return 0


if __name__ == '__main__':
  sys.exit(main())
