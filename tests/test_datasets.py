"""Tests of the real-dataset builders on tiny fixtures in their real layouts.

FaceForensics (frames + OpenPose JSON / .npy landmarks), BDD100K, CamVid and
paired folders are written by tests/fixtures_datasets.py into temporary
folders, built with TFDS (ArrayRecord, no TensorFlow import) and read back
through the dataset registry, as training reads them.
"""
import contextlib
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys

import ml_collections
import numpy as np
import pytest
from PIL import Image

from bil_jax import config_lib
from bil_jax.data import bdd100k
from bil_jax.data import camvid
from bil_jax.data import episodes
from bil_jax.data import face_clips
from bil_jax.data import face_video
from bil_jax.data import faceforensics
from bil_jax.data import image_io
from bil_jax.data import landmarks as lm
from bil_jax.data import paired_folder
from bil_jax.data import registry

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fixtures_datasets as fx  # pylint: disable=g-import-not-at-top,wrong-import-position

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DataError = image_io.DataError


def data_cfg(**kw) -> ml_collections.ConfigDict:
  d = config_lib.base_config().data
  for k, v in kw.items():
    d[k] = v
  return d


def load(d, split):
  """registry.load_tasks with its stdout captured: (TaskSet, printed text)."""
  buf = io.StringIO()
  with contextlib.redirect_stdout(buf):
    ts = registry.load_tasks(d, split, workdir='/nonexistent')
  return ts, buf.getvalue()


def agreement(maps, images, colours):
  """Fraction of pixels whose image colour is nearest to their class colour.

  maps: [n, H, W] ids; images [n, H, W, 3]; colours [C, 3].
  """
  d = np.abs(images[..., None, :].astype(int) - colours.astype(int)).sum(-1)
  return float(np.mean(np.argmin(d, -1) == maps))


def assert_one_line_naming(err, path):
  msg = str(err.value)
  assert '\n' not in msg, msg
  assert str(path) in msg, (path, msg)


# ---------------------------------------------------------------------------
# Landmark rasterisation
# ---------------------------------------------------------------------------


def inside(poly: np.ndarray, hw) -> np.ndarray:
  """Pixel centres inside a polygon (even-odd ray casting): bool [H, W]."""
  ys, xs = np.mgrid[:hw[0], :hw[1]] + 0.5
  res = np.zeros(hw, bool)
  x0, y0 = poly[:, 0], poly[:, 1]
  x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
  for a, b, c, e in zip(x0, y0, x1, y1):
    crosses = (b > ys) != (e > ys)
    xint = a + (ys - b) * (c - a) / np.where(e == b, 1e-12, e - b)
    res ^= crosses & (xs < xint)
  return res


def grow(mask, r):
  out = mask.copy()
  for _ in range(r):
    g = out.copy()
    g[1:] |= out[:-1]
    g[:-1] |= out[1:]
    g[:, 1:] |= out[:, :-1]
    g[:, :-1] |= out[:, 1:]
    out = g
  return out


def test_landmark_regions_are_where_their_polygons_are():
  hw = (96, 96)
  pts = lm.template(96)
  seg = lm.rasterise(pts, *hw, line_width=1)
  assert seg.dtype == np.uint8 and seg.shape == hw
  np.testing.assert_array_equal(np.unique(seg), np.arange(7))
  masks = {c: np.zeros(hw, bool) for c in range(1, 7)}
  for c, poly in lm.region_polygons(pts):
    masks[c] |= inside(poly, hw)
  for c in range(1, 7):
    later = np.zeros(hw, bool)
    for k in range(c + 1, 7):
      later |= grow(masks[k], 2)
    # A class appears only on (or within 2 px of) its own polygons ...
    assert not np.any((seg == c) & ~grow(masks[c], 2)), c
    # ... and fills them wherever no later class paints over.
    core = ~grow(~masks[c], 1) & ~later
    assert core.any(), c
    assert np.all(seg[core] == c), c
  # Anatomy: named points land in the expected regions.
  px = lambda p: seg[int(p[1]), int(p[0])]
  assert px((pts[36] + pts[39]) / 2) == 3  # left eye centre
  assert px((pts[42] + pts[45]) / 2) == 3  # right eye centre
  assert px((pts[60] + pts[64]) / 2) == 6  # mouth centre: inner mouth
  assert px((pts[51] + pts[62]) / 2) == 5  # between outer and inner upper lip
  assert px((pts[29] + pts[33]) / 2) == 4  # nose
  assert px((pts[2] + pts[30]) / 2) == 1  # cheek
  assert seg[0, 0] == 0 and seg[-1, -1] == 0  # background


def test_nose_is_the_convex_hull_and_regions_follow_ibug_indices():
  polys = lm.region_polygons(lm.template(1.0))
  classes = [c for c, _ in polys]
  assert classes == [1, 2, 2, 3, 3, 4, 5, 6]
  face = polys[0][1]
  np.testing.assert_allclose(face[:17], lm.template(1.0)[:17])
  np.testing.assert_allclose(face[17:], lm.template(1.0)[26:16:-1])
  hull = polys[5][1]
  # Every nose point is inside or on the hull; hull vertices are nose points.
  nose = lm.template(1.0)[27:36]
  assert all(any(np.allclose(v, q) for q in nose) for v in hull)


def test_landmark_validity_and_readers(tmp_path):
  good = np.concatenate([lm.template(50.0), np.ones((68, 1))], 1)
  assert lm.is_valid(good) and lm.is_valid(good[:, :2])
  nan = good.copy()
  nan[3, 1] = np.nan
  zero = good.copy()
  zero[10, 2] = 0
  assert not lm.is_valid(None)
  assert not lm.is_valid(nan) and not lm.is_valid(zero)
  assert not lm.is_valid(np.zeros((68, 2)))  # all at one spot
  assert not lm.is_valid(good[:30])
  # OpenPose JSON: 70 points, the best of two people; none -> None.
  flat = lambda p, c: np.concatenate(
      [np.concatenate([p, np.full(
          (68, 1), c)], 1), np.zeros((2, 3))]).ravel()
  path = tmp_path / 'a_000000000007_keypoints.json'
  path.write_text(
      json.dumps({
          'people': [{'face_keypoints_2d': flat(good[:, :2] + 1, 0.2).tolist()},
                     {'face_keypoints_2d': flat(good[:, :2], 0.9).tolist()}]
      }))
  got = lm.read_openpose_json(str(path))
  np.testing.assert_allclose(got[:, :2], good[:, :2], atol=1e-4)
  assert face_video.frame_number(str(path)) == 7
  path.write_text(json.dumps({'people': []}))
  assert lm.read_openpose_json(str(path)) is None
  path.write_text('{not json')
  with pytest.raises(DataError) as err:
    lm.read_openpose_json(str(path))
  assert_one_line_naming(err, path)


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


# ---------------------------------------------------------------------------
# BDD100K and CamVid
# ---------------------------------------------------------------------------


@pytest.fixture(scope='module')
def streets(tmp_path_factory):
  root = tmp_path_factory.mktemp('streets')
  names = fx.write_bdd100k(str(root / 'bdd100k'))
  fx.write_camvid(str(root / 'camvid'))
  d = data_cfg(name='bdd_camvid', num_classes=20, image_height=16, image_width=32,
               manual_dir=str(root), shots=1, queries=5, eval_queries=5, reuse_pairs=True,
               data_dir=str(tmp_path_factory.mktemp('streets_tfds')))
  (train, _), (test, out) = load(d, 'train'), load(d, 'test')
  val, _ = load(d, 'val')
  return {
      'train': train, 'val': val, 'test': test, 'out': out, 'names': names, 'root': root, 'cfg': d
  }


def test_bdd100k_pairs_are_one_shot_tasks(streets):
  tr, bdd_train = streets['train'], streets['names']['train']
  # data.val_fraction=0.1 of 3 pairs: 1 held out, the middle one by sorted name.
  assert tr.names == (bdd_train[0], bdd_train[2])
  assert streets['val'].names == (bdd_train[1],)
  np.testing.assert_array_equal(tr.task_sizes(), [1, 1])
  assert tr.maps.shape == (2, 16, 32) and tr.images.shape == (2, 16, 32, 3)
  assert tr.num_classes == 20 and tr.maps.max() <= 19
  assert 19 in np.unique(tr.maps)  # void (255) -> 19
  va = streets['val']
  assert agreement(np.concatenate([tr.maps, va.maps]), np.concatenate([tr.images, va.images]),
                   fx.class_colour(np.arange(20))) > 0.85
  # reuse_pairs fills support + query sets from the single pair.
  ep = episodes.sample_episode(tr, 0, 1, 5, np.random.default_rng(0), streets['cfg'].augment,
                               reuse_pairs=True)
  assert ep['query']['map'].shape == (5, 16, 32)


def test_bdd100k_alone_uses_val_as_test(streets):
  d = streets['cfg'].copy_and_resolve_references()
  d.name = 'bdd100k'
  ts, _ = load(d, 'test')
  assert ts.names == tuple(streets['names']['val'])


def test_camvid_clips(streets):
  te = streets['test']
  # 0001TP: 12 frames -> 1 clip (2 dropped); Seq05VD: 10 frames -> 1 clip.
  assert te.names == ('0001TP_000', 'Seq05VD_000')
  np.testing.assert_array_equal(te.task_sizes(), [10, 10])
  assert te.maps.shape == (20, 16, 32) and te.num_classes == 20
  assert te.maps.max() <= 19
  assert 'dropped 2 frames at sequence ends' in streets['out']
  assert agreement(te.maps, te.images, fx.class_colour(np.arange(20))) > 0.9
  ep = episodes.sample_episode(te, 1, 1, 5, np.random.default_rng(0), None, augment_query=False)
  assert ep['support']['map'].shape == (1, 16, 32)
  assert ep['query']['map'].shape == (5, 16, 32)


def test_camvid_mapping_covers_every_class():
  names = [n for n, _, _ in camvid.CAMVID_CLASSES]
  colours = [c for _, c, _ in camvid.CAMVID_CLASSES]
  assert len(names) == 32 and len(set(names)) == 32  # 31 classes + Void
  assert len(set(colours)) == 32
  assert set(camvid.CAMVID_TO_BDD) == set(names)
  assert all(0 <= b < bdd100k.NUM_CLASSES for b in camvid.CAMVID_TO_BDD.values())
  assert camvid.CAMVID_TO_BDD['Void'] == bdd100k.VOID
  for n, b in [('Road', 'road'), ('Sky', 'sky'), ('Car', 'car'), ('Pedestrian', 'person'),
               ('Tree', 'vegetation'), ('Building', 'building'), ('Sidewalk', 'sidewalk'),
               ('Column_Pole', 'pole'), ('TrafficLight', 'traffic light')]:
    assert bdd100k.BDD_CLASSES[camvid.CAMVID_TO_BDD[n]] == b
  # The palette decodes every colour to its mapped class.
  rgb = np.array(colours, np.uint8)[None]
  ids = image_io.colours_to_ids('x.png', rgb, camvid.PALETTE, 'CamVid')
  np.testing.assert_array_equal(ids[0], [camvid.CAMVID_TO_BDD[n] for n in names])


def test_resize_center_crop_geometry():
  """720x1280 -> cover 144x256 -> rows 8..135; the map follows the image."""
  ids = np.zeros((720, 1280), np.uint8)
  ids[:45] = 1  # first 45 rows -> 9 rows at 144 -> 1 row after the crop
  ids[:, 640:] += 2
  img = fx.class_colour(ids)
  out_img, out_ids = image_io.resize_center_crop(img, ids, 128, 256)
  assert out_img.shape == (128, 256, 3) and out_ids.shape == (128, 256)
  assert np.all(out_ids[0, :128] == 1) and np.all(out_ids[1:, :128] == 0)
  assert np.all(out_ids[5:, 128:] == 2)
  assert agreement(out_ids[None], out_img[None], fx.class_colour(np.arange(4))) > 0.98


def test_bdd_camvid_loads_by_parts(tmp_path, streets):
  """bdd100k_dir / camvid_dir point at the two datasets separately."""
  d = streets['cfg'].copy_and_resolve_references()
  d.manual_dir = ''
  d.bdd100k_dir = str(streets['root'] / 'bdd100k')
  d.camvid_dir = str(streets['root'] / 'camvid')
  d.data_dir = str(tmp_path)
  ts, _ = load(d, 'test')
  assert ts.num_tasks == 2


# ---------------------------------------------------------------------------
# Paired folder
# ---------------------------------------------------------------------------


def paired_cfg(root, data_dir, **kw):
  return data_cfg(name='paired_folder', num_classes=5, image_height=16, image_width=24,
                  manual_dir=str(root), data_dir=str(data_dir), shots=2, queries=2, eval_queries=2,
                  **kw)


def test_paired_folder(tmp_path):
  fx.write_paired_folder(
      str(tmp_path / 'root'),
      {'train': {'alice': 4, 'bob': 5}, 'val': {'dave': 4}, 'test': {'carol': 4}}, num_classes=5,
      hw=(20, 30))
  d = paired_cfg(tmp_path / 'root', tmp_path / 'tfds')
  tr, _ = load(d, 'train')
  te, _ = load(d, 'test')
  va, _ = load(d, 'val')
  assert tr.names == ('alice', 'bob') and te.names == ('carol',)
  assert va.names == ('dave',) and va.task_sizes().tolist() == [4]
  np.testing.assert_array_equal(tr.task_sizes(), [4, 5])
  assert tr.maps.shape == (9, 16, 24) and te.images.shape == (4, 16, 24, 3)
  np.testing.assert_array_equal(np.unique(tr.maps), np.arange(5))
  assert agreement(tr.maps, tr.images, fx.class_colour(np.arange(5))) > 0.9


# ---------------------------------------------------------------------------
# Bad input: one line naming the file; nothing half-written
# ---------------------------------------------------------------------------


def write_png(path, array):
  return fx.save(str(path), np.asarray(array, np.uint8))


def test_corrupt_or_truncated_image(tmp_path):
  bad = tmp_path / 'bad.png'
  bad.write_bytes(b'not an image at all')
  with pytest.raises(DataError) as err:
    image_io.read_rgb(str(bad))
  assert_one_line_naming(err, bad)
  good = write_png(tmp_path / 'good.png', np.random.default_rng(0).integers(0, 255, (64, 64, 3)))
  cut = tmp_path / 'cut.png'
  cut.write_bytes(open(good, 'rb').read()[:400])
  with pytest.raises(DataError) as err:
    image_io.read_rgb(str(cut))
  assert_one_line_naming(err, cut)
  with pytest.raises(DataError) as err:
    image_io.read_rgb(str(tmp_path / 'missing.png'))
  assert_one_line_naming(err, tmp_path / 'missing.png')


def test_label_id_outside_the_classes(tmp_path):
  fx.write_paired_folder(str(tmp_path), {'train': {'t': 2}}, 5, hw=(8, 8))
  lab = tmp_path / 'train' / 't' / 'labels' / 'p001.png'
  ids = np.zeros((8, 8), np.uint8)
  ids[3, 6] = 7
  write_png(lab, ids)
  with pytest.raises(DataError) as err:
    list(paired_folder.generate_tasks(str(tmp_path), 'train', 5, 8, 8))
  assert_one_line_naming(err, lab)
  assert 'label id 7 at pixel (y=3, x=6)' in str(err.value)
  # BDD100K: ids 0-18 and 255 only.
  with pytest.raises(DataError) as err:
    bdd100k.bdd_ids('m.png', np.array([[0, 18, 255, 42]]))
  assert_one_line_naming(err, 'm.png')
  assert 'label id 42' in str(err.value)


def test_colour_not_in_the_camvid_palette(tmp_path):
  fx.write_camvid(str(tmp_path), {'0001TP': 10}, hw=(12, 16))
  lab = tmp_path / 'LabeledApproved_full' / '0001TP_000090_L.png'
  rgb = np.zeros((12, 16, 3), np.uint8)
  rgb[2, 5] = (1, 2, 3)
  write_png(lab, rgb)
  with pytest.raises(DataError) as err:
    list(camvid.generate_tasks(str(tmp_path), 8, 8))
  assert_one_line_naming(err, lab)
  assert 'colour (1, 2, 3) at pixel (y=2, x=5)' in str(err.value)


def test_image_and_label_of_different_sizes(tmp_path):
  fx.write_paired_folder(str(tmp_path), {'train': {'t': 2}}, 5, hw=(8, 8))
  lab = tmp_path / 'train' / 't' / 'labels' / 'p000.png'
  write_png(lab, np.zeros((9, 8)))
  with pytest.raises(DataError) as err:
    list(paired_folder.generate_tasks(str(tmp_path), 'train', 5, 8, 8))
  assert_one_line_naming(err, lab)
  assert 'label is 8x9 but its image' in str(err.value)
  fx.write_bdd100k(str(tmp_path / 'bdd'), {'train': 2}, hw=(10, 20))
  lab = tmp_path / 'bdd' / 'labels' / 'sem_seg' / 'masks' / 'train' / ('tr0000-bdd.png')
  write_png(lab, np.zeros((10, 21)))
  with pytest.raises(DataError) as err:
    list(bdd100k.generate_tasks(str(tmp_path / 'bdd'), 'train', 8, 8))
  assert_one_line_naming(err, lab)


def test_missing_image_or_label(tmp_path):
  fx.write_paired_folder(str(tmp_path), {'train': {'t': 2}}, 5, hw=(8, 8))
  os.remove(tmp_path / 'train' / 't' / 'labels' / 'p001.png')
  with pytest.raises(DataError) as err:
    list(paired_folder.generate_tasks(str(tmp_path), 'train', 5, 8, 8))
  assert_one_line_naming(err, tmp_path / 'train' / 't' / 'images' / 'p001.png')


def test_task_with_too_few_pairs(tmp_path):
  fx.write_paired_folder(str(tmp_path / 'root'),
                         {'train': {'big': 4, 'small': 3}, 'val': {'v': 4}, 'test': {'c': 4}},
                         num_classes=5, hw=(8, 8))
  d = paired_cfg(tmp_path / 'root', tmp_path / 'tfds')
  with pytest.raises(DataError) as err:
    load(d, 'train')
  assert_one_line_naming(err, tmp_path / 'root' / 'train' / 'small')
  assert 'has 3 pairs, fewer than shots + queries = 4' in str(err.value)
  d.reuse_pairs = True
  ts, _ = load(d, 'train')
  assert ts.task_sizes().tolist() == [4, 3]


def test_missing_manual_dir(tmp_path):
  for manual, named in ((str(tmp_path / 'nope'), str(tmp_path / 'nope')), ('', 'data.manual_dir')):
    for name, classes in (('paired_folder', 5), ('faceforensics', 7), ('bdd_camvid', 20)):
      d = paired_cfg(manual, tmp_path / 'tfds')
      d.name, d.num_classes = name, classes
      with pytest.raises(DataError) as err:
        load(d, 'train')
      assert_one_line_naming(err, named)
  assert not os.path.exists(tmp_path / 'tfds')  # nothing written


def prepared_files(data_dir):
  out = []
  for dirpath, _, files in os.walk(data_dir):
    out += [os.path.join(dirpath, f) for f in files]
  return out


def test_failure_leaves_nothing_half_written(tmp_path):
  """A bad file in the LAST split: the train split was already written to a
  temporary folder, which TFDS removes; nothing prepared remains."""
  root = tmp_path / 'root'
  fx.write_paired_folder(str(root), {'train': {'a': 4}, 'val': {'v': 4}, 'test': {'b': 4}},
                         num_classes=5, hw=(8, 8))
  bad = root / 'test' / 'b' / 'images' / 'p002.png'
  good_bytes = bad.read_bytes()
  bad.write_bytes(b'\x89PNG\r\n\x1a\n garbage')
  d = paired_cfg(root, tmp_path / 'tfds')
  with pytest.raises(DataError) as err:
    load(d, 'train')
  assert_one_line_naming(err, bad)
  leftovers = prepared_files(tmp_path / 'tfds')
  assert not [f for f in leftovers if 'array_record' in f or f.endswith('dataset_info.json')
             ], leftovers
  assert not [f for f in leftovers if 'incomplete' in f], leftovers
  # Fixing the file and preparing again works from scratch.
  bad.write_bytes(good_bytes)
  ts, _ = load(d, 'train')
  assert ts.names == ('a',)


# ---------------------------------------------------------------------------
# The prepare CLI and the paper configs
# ---------------------------------------------------------------------------


def run_cli(*args):
  env = dict(os.environ, PYTHONPATH=REPO)
  return subprocess.run(
      [sys.executable, os.path.join(REPO, 'data_prep', 'prepare.py'), *args], capture_output=True,
      text=True, env=env, timeout=120, check=False)


def test_prepare_cli(tmp_path):
  fx.write_bdd100k(str(tmp_path / 'm' / 'bdd100k'), {'train': 2})
  fx.write_camvid(str(tmp_path / 'm' / 'camvid'), {'0006R0': 10})
  size = ['--config.data.image_height=16', '--config.data.image_width=32']
  res = run_cli(f'--config={REPO}/configs/streets.py:pix2pix', f'--manual_dir={tmp_path}/m',
                f'--data_dir={tmp_path}/tfds', *size)
  assert res.returncode == 0, res.stderr[-2000:]
  assert 'bdd_camvid/train: 1 tasks of 16x32' in res.stdout
  assert 'bdd_camvid/val: 1 tasks of 16x32' in res.stdout
  assert 'bdd_camvid/test: 1 tasks of 16x32' in res.stdout
  # A colour outside the palette: exit 1 with one line naming the file.
  lab = tmp_path / 'm' / 'camvid' / 'LabeledApproved_full' / ('0006R0_f00030_L.png')
  write_png(lab, np.full((36, 48, 3), 7))
  res = run_cli(f'--config={REPO}/configs/streets.py:pg2', f'--manual_dir={tmp_path}/m',
                f'--data_dir={tmp_path}/tfds2', *size)
  assert res.returncode == 1
  errors = [l for l in res.stderr.splitlines() if l.startswith('error:')]
  assert len(errors) == 1 and str(lab) in errors[0], res.stderr[-2000:]


def load_config(name, arg):
  spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, 'configs', name + '.py'))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config(arg)


PAPER_CONFIGS = [('faces', 'pg2,5shot'), ('faces', 'pg2,1shot'), ('faces', 'pix2pix,5shot'),
                 ('faces', 'pix2pix,1shot'), ('streets', 'pg2'), ('streets', 'pix2pix')]


@pytest.mark.parametrize('name,arg', PAPER_CONFIGS)
def test_paper_configs(name, arg):
  c = load_config(name, arg)
  faces = name == 'faces'
  assert c.model.name == arg.split(',')[0]
  assert c.data.name == ('faceforensics' if faces else 'bdd_camvid')
  assert c.data.num_classes == (7 if faces else 20)
  assert (c.data.image_height, c.data.image_width) == ((128, 128) if faces else (128, 256))
  assert c.data.shots == (1 if '1shot' in arg or not faces else 5)
  assert c.data.eval_queries == 20  # Sec. 5.2: 20 per test video / CamVid clip
  assert c.data.reuse_pairs == (not faces)
  assert c.data.augment.flip_reference == (not faces)
  assert (c.optim.lr, c.optim.b1, c.optim.b2) == (1e-4, 0.5, 0.999)
  assert (c.meta.meta_batch, c.pretrain.batch_size) == (5, 5)
  assert (c.pretrain.steps, c.meta.steps) == (50_000, 20_000)
  assert (c.eval.is_steps, c.eval.aux_tasks) == (20, 5)
  assert (c.loss.lambda_a, c.loss.lambda_b) == (10.0, 2.0)
  with pytest.raises(AttributeError):  # locked: typos fail
    c.data.shot = 3
  with pytest.raises(ValueError):
    load_config(name, arg + ',3shot')


@pytest.mark.parametrize('name,arg', [(n, a + ',smoke') for n, a in PAPER_CONFIGS])
def test_smoke_configs_run_on_synthetic_data(name, arg, tmp_path):
  c = load_config(name, arg)
  paper = load_config(name, arg.replace('smoke', '').strip(','))
  assert c.data.name == 'synthetic' and c.loss.lambda_b == 0.0
  for key in ('shots', 'num_classes', 'reuse_pairs'):
    assert c.data[key] == paper.data[key], key
  assert c.data.augment.flip_reference == paper.data.augment.flip_reference
  assert c.model.name == paper.model.name
  d = c.data.copy_and_resolve_references()
  d.data_dir = str(tmp_path)
  ts = registry.load_tasks(d, 'train', '/nonexistent')
  ep = episodes.sample_meta_batch(ts, c.meta.meta_batch, d.shots, d.queries,
                                  np.random.default_rng(0), d.augment, reuse_pairs=d.reuse_pairs)
  assert ep['support']['map'].shape == (c.meta.meta_batch, d.shots, d.image_height, d.image_width)
  te = registry.load_tasks(d, 'test', '/nonexistent')
  episodes.sample_episode(te, 0, d.shots, d.eval_queries, np.random.default_rng(1), d.augment,
                          False, reuse_pairs=d.reuse_pairs)
