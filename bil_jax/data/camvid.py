"""CamVid video clips as 1-shot test tasks, labelled in BDD100K's 20 classes.

Sec. 5.1: "CamVid contains 704 annotated images with 33 semantic classes
captured in 5 different street view videos.  [...] we divide the CamVid videos
into small video clips and each clip contains 10 successive annotated images.
[...] we map the 33 classes of CamVid to the 20 classes of BDD.  Images are
resized and then center-cropped to the size of 128x256.  For each video clip,
we randomly select 1 image for 1-shot learning and 5 images for final
evaluation."  (The official palette has 32 colours: 31 classes and Void; all
32 are mapped below.)

Layout (``manual_dir``, or ``manual_dir/camvid``): colour-coded labels named
``<image stem>_L.png`` and their images ``<image stem>.png`` anywhere below it,
e.g. the original release (``701_StillsRaw_full/`` + ``LabeledApproved_full/``)
or the common train/val/test re-split (``train/``, ``train_labels/``, ...).
File names are ``<sequence>_<frame>``: 0001TP_006690, 0006R0_f00930,
0016E5_00390, Seq05VD_f00000; frames of a sequence are ordered by their
number and cut into clips of ``clip_length`` (10) successive annotated frames;
the last < 10 frames of a sequence are dropped (counted and printed).  With
the 701 frames of CamVid this gives 69 clips.

Each clip is one task of 10 pairs; the configs use data.shots = 1 and
data.eval_queries = 5.  The builder has only the 'test' split: CamVid is the
cross-dataset test set of a BDD100K-trained model.  data.name = 'bdd_camvid'
loads BDD100K for 'train' and 'val' (a held-out fraction of BDD's train) and
these clips for 'test'.

Bad input: a label colour not in the palette, an unreadable image, an image
and label of different sizes, a label without its image, an unparsable name:
a one-line image_io.DataError naming the file.
"""
import collections
import dataclasses
import os
import re
from typing import Dict, Iterator, List, Tuple

import numpy as np
import tensorflow_datasets as tfds

from bil_jax.data import bdd100k
from bil_jax.data import image_io
from bil_jax.data import paired_folder
from bil_jax.data import registry
from bil_jax.data import task_builder
from bil_jax.data import tasks as tasks_lib

B = {name: i for i, name in enumerate(bdd100k.BDD_CLASSES)}

# The official CamVid palette (label_colors.txt): (name, RGB, BDD100K class).
# Mapping rule: the class BDD100K's annotation would give the object; objects
# BDD100K leaves unlabelled (255: animals, prams, cones, bridges, tunnels)
# become void (19), as they would in a BDD label map.
CAMVID_CLASSES: Tuple[Tuple[str, Tuple[int, int, int], int], ...] = (
    ('Animal', (64, 128, 64), B['void']),
    ('Archway', (192, 0, 128), B['building']),
    ('Bicyclist', (0, 128, 192), B['rider']),  # rider + bike; BDD splits them
    ('Bridge', (0, 128, 64), B['void']),
    ('Building', (128, 0, 0), B['building']),
    ('Car', (64, 0, 128), B['car']),
    ('CartLuggagePram', (64, 0, 192), B['void']),
    ('Child', (192, 128, 64), B['person']),
    ('Column_Pole', (192, 192, 128), B['pole']),
    ('Fence', (64, 64, 128), B['fence']),
    ('LaneMkgsDriv', (128, 0, 192), B['road']),
    ('LaneMkgsNonDriv', (192, 0, 64), B['road']),
    ('Misc_Text', (128, 128, 64), B['traffic sign']),
    ('MotorcycleScooter', (192, 0, 192), B['motorcycle']),
    ('OtherMoving', (128, 64, 64), B['car']),
    ('ParkingBlock', (64, 192, 128), B['sidewalk']),
    ('Pedestrian', (64, 64, 0), B['person']),
    ('Road', (128, 64, 128), B['road']),
    ('RoadShoulder', (128, 128, 192), B['sidewalk']),
    ('Sidewalk', (0, 0, 192), B['sidewalk']),
    ('SignSymbol', (192, 128, 128), B['traffic sign']),
    ('Sky', (128, 128, 128), B['sky']),
    ('SUVPickupTruck', (64, 128, 192), B['car']),
    ('TrafficCone', (0, 0, 64), B['void']),
    ('TrafficLight', (0, 64, 64), B['traffic light']),
    ('Train', (192, 64, 128), B['train']),
    ('Tree', (128, 128, 0), B['vegetation']),
    ('Truck_Bus', (192, 128, 192), B['truck']),  # BDD splits truck / bus
    ('Tunnel', (64, 0, 64), B['void']),
    ('VegetationMisc', (192, 192, 0), B['vegetation']),
    ('Void', (0, 0, 0), B['void']),
    ('Wall', (64, 192, 0), B['wall']),
)
CAMVID_TO_BDD: Dict[str, int] = {n: b for n, _, b in CAMVID_CLASSES}
PALETTE: Dict[Tuple[int, int, int], int] = {c: b for _, c, b in CAMVID_CLASSES}

LABEL_SUFFIX = '_L'
_NAME = re.compile(r'^(?P<seq>[A-Za-z0-9]+)_f?(?P<frame>\d+)$')
WHAT = ('CamVid: images <seq>_<frame>.png and colour labels '
        '<seq>_<frame>_L.png (see docs/datasets.md)')


def parse_name(path: str, stem: str) -> Tuple[str, int]:
  """'0006R0_f00930' -> ('0006R0', 930); image_io.DataError naming ``path`` if not."""
  m = _NAME.match(stem)
  if not m:
    raise image_io.DataError(
        path, 'cannot read <sequence>_<frame> from the file name '
        "(e.g. 0001TP_006690 or Seq05VD_f00000)")
  return m.group('seq'), int(m.group('frame'))


def find_pairs(root: str) -> Dict[str, List[Tuple[int, str, str]]]:
  """{sequence: [(frame, image path, label path)] sorted by frame}.

  Files are found anywhere below ``root``; where the same name occurs twice
  (two copies of the data set) the first in sorted path order is used.
  """
  images, labels = {}, {}
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames.sort()
    for fn in sorted(filenames):
      stem, ext = os.path.splitext(fn)
      if ext.lower() not in image_io.IMAGE_EXTENSIONS:
        continue
      path = os.path.join(dirpath, fn)
      if stem.endswith(LABEL_SUFFIX):
        labels.setdefault(stem[:-len(LABEL_SUFFIX)], path)
      else:
        images.setdefault(stem, path)
  seqs = collections.defaultdict(list)
  for stem, lab in sorted(labels.items()):
    if stem not in images:
      raise image_io.DataError(lab, f'has no image {stem}.png below {root}')
    seq, frame = parse_name(lab, stem)
    seqs[seq].append((frame, images[stem], lab))
  return {s: sorted(v) for s, v in sorted(seqs.items())}


def make_clips(seqs: Dict[str, List[Tuple[int, str, str]]], clip_length: int):
  """[(clip name, [(frame, image, label)] * clip_length)], dropped count."""
  clips, dropped = [], 0
  for seq, frames in seqs.items():
    n = len(frames) // clip_length
    dropped += len(frames) - n * clip_length
    for k in range(n):
      clips.append((f'{seq}_{k:03d}', frames[k * clip_length:(k + 1) * clip_length]))
  return clips, dropped


def read_pair(image_path: str, label_path: str, height: int,
              width: int) -> Tuple[np.ndarray, np.ndarray]:
  """One frame in BDD classes: (uint8 [H, W] ids, uint8 [H, W, 3] image)."""
  image = image_io.read_rgb(image_path)
  ids = image_io.colours_to_ids(label_path, image_io.read_rgb(label_path), PALETTE,
                                'CamVid').astype(np.uint8)
  image_io.check_same_size(image_path, image, label_path, ids)
  image, ids = image_io.resize_center_crop(image, ids, height, width)
  return ids, image


def find_root(manual_dir: str) -> str:
  sub = os.path.join(manual_dir, 'camvid')
  return sub if os.path.isdir(sub) else manual_dir


def generate_tasks(manual_dir: str, height: int, width: int,
                   clip_length: int = 10) -> Iterator[task_builder.Task]:
  """Yields one task per clip: (name, maps [L,H,W], images [L,H,W,3])."""
  root = find_root(manual_dir)
  seqs = find_pairs(root)
  if not seqs:
    raise image_io.DataError(root, 'no CamVid labels (<seq>_<frame>_L.png) found')
  clips, dropped = make_clips(seqs, clip_length)
  print(
      f'camvid: {sum(map(len, seqs.values()))} annotated frames in '
      f'{len(seqs)} sequences -> {len(clips)} clips of {clip_length}; '
      f'dropped {dropped} frames at sequence ends', flush=True)
  if not clips:
    raise image_io.DataError(root, f'no sequence has {clip_length} annotated frames')
  for name, frames in clips:
    maps, images = zip(*(read_pair(ip, lp, height, width) for _, ip, lp in frames))
    yield name, np.stack(maps), np.stack(images)


@dataclasses.dataclass(eq=False)
class CamvidConfig(task_builder.TaskConfig):
  clip_length: int = 10


def make_builder_config(height: int, width: int, clip_length: int) -> CamvidConfig:
  return task_builder.sized_config(CamvidConfig, 'CamVid clips', height, width,
                                   f'clip{clip_length}', clip_length=clip_length)


class CamvidClips(task_builder.ManualTaskBuilder):
  """CamVid clips in BDD100K classes; one example = one clip (test only)."""

  MANUAL_DOWNLOAD_INSTRUCTIONS = WHAT
  HOMEPAGE = 'http://mi.eng.cam.ac.uk/research/projects/VideoRec/CamVid/'

  def _splits(self, manual_dir: str):
    del manual_dir
    return ('test',)

  def _tasks(self, manual_dir: str, split: str):
    cfg = self.builder_config
    return generate_tasks(manual_dir, cfg.height, cfg.width, cfg.clip_length)


def camvid_dir(data_cfg) -> str:
  """data.camvid_dir, else MANUAL_DIR/camvid if it exists, else MANUAL_DIR."""
  return paired_folder.dataset_dir(data_cfg, 'camvid_dir', 'camvid')


def prepare_data(data_cfg, workdir: str) -> Dict[str, tfds.core.DatasetBuilder]:
  """Prepares the CamVid clips for data_cfg; {'test': builder}."""
  config = make_builder_config(int(data_cfg.image_height), int(data_cfg.image_width),
                               int(data_cfg.get('clip_length', 10)))
  builder = paired_folder.prepare(CamvidClips, config,
                                  paired_folder.default_data_dir(data_cfg, workdir),
                                  camvid_dir(data_cfg), WHAT)
  return {'test': builder}


def _load_test(data_cfg, workdir: str) -> tasks_lib.TaskSet:
  ts = tasks_lib.taskset_from_tfds(
      prepare_data(data_cfg, workdir)['test'], 'test', bdd100k.NUM_CLASSES)
  root = camvid_dir(data_cfg) or '<camvid_dir>'
  return paired_folder.check_task_sizes(ts, data_cfg, 'test', lambda n: os.path.join(root, n))


@registry.register('camvid')
def load_camvid(data_cfg, split: str, workdir: str) -> tasks_lib.TaskSet:
  """Registry loader; CamVid has only test tasks (use 'bdd_camvid' to train)."""
  bdd100k.check_num_classes(data_cfg, 'CamVid (mapped to BDD100K)')
  if split != 'test':
    raise ValueError("CamVid is a test-only dataset here (the cross-dataset "
                     "test set); train with data.name='bdd_camvid'")
  return _load_test(data_cfg, workdir)


@registry.register('bdd_camvid')
def load_bdd_camvid(data_cfg, split: str, workdir: str) -> tasks_lib.TaskSet:
  """The paper's street setting: BDD100K pairs for 'train' and 'val', CamVid for 'test'.

  BDD100K is read from data.bdd100k_dir (default MANUAL_DIR/bdd100k, or
  MANUAL_DIR itself) and CamVid from data.camvid_dir (default
  MANUAL_DIR/camvid).
  """
  bdd100k.check_num_classes(data_cfg, 'bdd_camvid')
  if split in ('train', 'val'):
    return bdd100k.load_bdd100k(data_cfg, split, workdir)
  return _load_test(data_cfg, workdir)


def prepare_bdd_camvid(data_cfg, workdir: str) -> Dict[str, tfds.core.DatasetBuilder]:
  """Prepares both halves of 'bdd_camvid'; {'train', 'val': BDD, 'test': CamVid}."""
  bdd = bdd100k.prepare_data(data_cfg, workdir)
  return {'train': bdd['train'], 'val': bdd['val'], 'test': prepare_data(data_cfg, workdir)['test']}
