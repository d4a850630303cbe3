"""Tests of the FaceForensics builder on a tiny fixture in its real layout.

Frames + OpenPose JSON / .npy landmarks are written by tests/fixtures_datasets.py into a
temporary folder, built with TFDS and read back through the dataset registry, as training
reads them; the converter from raw frames is tested too.
"""
import contextlib
import importlib.util
import io
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from bil_jax.data import episodes
from bil_jax.data import face_clips
from bil_jax.data import face_video
from bil_jax.data import faceforensics
from bil_jax.data import landmarks as lm
from bil_jax.data import registry
from tests import fixtures_datasets as fx
from tests.datasets_checks import REPO, agreement, data_cfg, load

# ---------------------------------------------------------------------------
# FaceForensics
# ---------------------------------------------------------------------------


@pytest.fixture(scope='module')
def faces(tmp_path_factory):
  root = str(tmp_path_factory.mktemp('ff_manual'))
  info = fx.write_faceforensics(root, size=64)
  shutil.copytree(os.path.join(root, 'test', 'vidC'), os.path.join(root, 'val', 'vidV'))
  d = data_cfg(name='faceforensics', num_classes=7, image_height=32, image_width=32,
               manual_dir=root, data_dir=str(tmp_path_factory.mktemp('ff_tfds')), shots=1,
               queries=1, eval_queries=1)
  d.frames_per_clip, d.min_frames = 3, 2
  (train, out_tr), (test, out_te) = load(d, 'train'), load(d, 'test')
  val, _ = load(d, 'val')
  return {'train': train, 'val': val, 'test': test, 'out': out_tr + out_te, 'info': info, 'cfg': d}


def test_faceforensics_tasks_shapes_and_classes(faces):
  tr, te = faces['train'], faces['test']
  # vidA: 7 clips of 3 frames, clip 1 lost 2 frames -> dropped (min 2).
  # vidB: 7 clips, the last lost 1 frame -> kept with 2.
  assert tr.names == tuple([f'vidA_c{c}' for c in (0, 2, 3, 4, 5, 6)]
                           + [f'vidB_c{c}' for c in range(7)])
  np.testing.assert_array_equal(tr.task_sizes(), [3] * 12 + [2])
  assert te.names == ('vidC',) and te.task_sizes().tolist() == [3]
  # MANUAL_DIR/val/ exists: its videos are the validation tasks, one unaugmented each.
  assert faces['val'].names == ('vidV',)
  np.testing.assert_array_equal(faces['val'].images, te.images)
  for ts in (tr, te):
    assert ts.num_classes == 7 and ts.image_hw == (32, 32)
    assert ts.maps.dtype == np.uint8 and ts.images.shape[-1] == 3
    np.testing.assert_array_equal(np.unique(ts.maps), np.arange(7))


def test_faceforensics_prints_dropped_counts(faces):
  out = faces['out']
  assert ('faceforensics/train: 2 videos; dropped 3 of 42 frames whose '
          'landmarks failed') in out
  assert 'dropped 1 of 14 clips with fewer than 2 good frames' in out
  assert 'faceforensics/test: 1 videos; dropped 1 of 5 frames' in out


def test_faceforensics_crop_keeps_map_and_image_aligned(faces):
  """Unaugmented tasks: the image colour at each pixel is its class colour."""
  for ts, names, tint in ((faces['train'], ('vidA_c0',), 10), (faces['train'], ('vidB_c0',), 60),
                          (faces['test'], ('vidC',), 120)):
    t = ts.names.index(names[0])
    colours = fx.class_colour(np.arange(7)).astype(int)
    colours[:, 0] = (colours[:, 0] + tint) % 256
    assert agreement(ts.task_maps(t), ts.task_images(t), colours) > 0.9
    # The face fills most of the square crop, with a background border.
    frac_bg = np.mean(ts.task_maps(t) == 0)
    assert 0.1 < frac_bg < 0.7, frac_bg


def test_faceforensics_augmented_clips(faces):
  """Clips 1-6 get one deterministic augmentation each, aligned with the map."""
  tr = faces['train']
  means = []
  for c in range(7):
    t = tr.names.index(f'vidB_c{c}')
    maps, imgs = tr.task_maps(t), tr.task_images(t).astype(float)
    # The map still explains the image: with each class's median colour in
    # this clip as its colour, most pixels are nearest to their own class.
    colours = np.stack(
        [np.median(imgs[maps == k], 0) if np.any(maps == k) else np.full(3, 1e4) for k in range(7)])
    assert agreement(maps, imgs, colours) > 0.85, c
    means.append(imgs[maps == 1].mean(0))
  # Different clips look different (colour augmentation).
  dist = [np.abs(means[a] - means[b]).sum() for a in range(7) for b in range(a + 1, 7)]
  assert min(dist) > 3, dist
  a1 = face_clips.sample_clip_augmentation(face_clips.clip_rng(0, 'vidB', 3))
  a2 = face_clips.sample_clip_augmentation(face_clips.clip_rng(0, 'vidB', 3))
  assert a1 == a2


def test_faceforensics_episodes_sample(faces):
  ts, d = faces['train'], faces['cfg']
  ep = episodes.sample_meta_batch(ts, 2, 1, 1, np.random.default_rng(0), d.augment)
  assert ep['support']['map'].shape == (2, 1, 32, 32)


def test_faceforensics_num_classes_must_be_7(faces):
  d = faces['cfg'].copy_and_resolve_references()
  d.num_classes = 8
  with pytest.raises(ValueError, match='num_classes=7'):
    registry.load_tasks(d, 'train', '/nonexistent')


def test_faceforensics_reads_video_files(tmp_path, monkeypatch):
  """A video file instead of frames/ (GIF here: no ffmpeg is needed for it)."""
  video_dir = tmp_path / 'test' / 'vidG'
  os.makedirs(video_dir)
  pts = [fx.frame_landmarks(f, 48) for f in range(6)]
  frames = [Image.fromarray(fx.face_frame(p, (48, 48), 0)) for p in pts]
  frames[0].save(video_dir / 'video.gif', save_all=True, append_images=frames[1:], duration=40,
                 loop=0)
  arr = np.stack(pts).astype(np.float32)
  arr[1, 0, 0] = np.nan
  np.save(video_dir / 'landmarks.npy', arr)
  monkeypatch.setattr(face_video, 'VIDEO_EXTENSIONS', ('.gif',))
  params = face_clips.FaceParams(height=16, width=16, frames_per_clip=0, min_frames=2)
  with contextlib.redirect_stdout(io.StringIO()) as out:
    tasks = list(faceforensics.generate_tasks(str(tmp_path), 'test', params))
  assert [(n, m.shape, i.shape) for n, m, i in tasks] == [('vidG', (5, 16, 16), (5, 16, 16, 3))]
  assert 'dropped 1 of 6 frames' in out.getvalue()


def test_faceforensics_converter_from_frames(tmp_path):
  spec = importlib.util.spec_from_file_location(
      'prepare_faceforensics', os.path.join(REPO, 'data_prep', 'prepare_faceforensics.py'))
  conv = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(conv)
  src = tmp_path / 'raw' / 'train' / 'original' / 'v1'
  os.makedirs(src)
  for f in range(4):
    fx.save(str(src / f'img{f}.png'), fx.face_frame(fx.frame_landmarks(f, 40), (40, 40), 0))
  assert conv.find_videos(str(tmp_path / 'raw' / 'train'), 'original') == [('v1', str(src))]
  calls = iter([None, lm.template(30.0), lm.template(30.0), None])
  n, failed = conv.convert_video(str(src), str(tmp_path / 'out' / 'v1'),
                                 detector=lambda img: next(calls))
  assert (n, failed) == (4, 2)
  arr = np.load(tmp_path / 'out' / 'v1' / 'landmarks.npy')
  assert arr.shape == (4, 68, 3)
  assert [lm.is_valid(a) for a in arr] == [False, True, True, False]
  assert sorted(os.listdir(tmp_path / 'out' / 'v1'
                           / 'frames')) == ['00000.png', '00001.png', '00002.png', '00003.png']
