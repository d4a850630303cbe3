r"""Prepares the dataset of an experiment config as TFDS data (one command).

  python data_prep/prepare.py --config=configs/streets.py \
    --manual_dir=/data/streets --data_dir=/data/tfds

reads the user's copy of the dataset in --manual_dir (the layouts are in
docs/datasets.md), writes the prepared splits to --data_dir and prints one
line per split.  Training then reads them with the same two paths:

  python -m bil_jax.main --config=configs/streets.py:pg2 --workdir=DIR \
    --config.data.manual_dir=/data/streets --config.data.data_dir=/data/tfds

Bad input stops with ONE line naming the file, e.g.
  error: /data/streets/camvid/LabeledApproved_full/0001TP_006690_L.png: colour
  (1, 2, 3) at pixel (y=0, x=5) is not in the CamVid palette; 17 such pixels
(on one line) and exit status 1; TFDS writes into a temporary folder, so
nothing half-written is left in --data_dir.  Any --config.* override works as
in training (e.g. --config.data.frames_per_clip=50).
"""
import os
import sys

if __package__ in (None, ''):  # `python data_prep/prepare.py` from anywhere
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file('config', None,
                                          'Experiment config file (configs/*.py[:args]).',
                                          lock_config=True)
_MANUAL_DIR = flags.DEFINE_string('manual_dir', None,
                                  "The user's copy of the dataset (data.manual_dir).")
_DATA_DIR = flags.DEFINE_string('data_dir', None,
                                'Where the prepared TFDS data goes (data.data_dir).')


def preparers():
  """data.name -> fn(data_cfg, workdir) -> {split: prepared builder}."""
  from bil_jax.data import bdd100k
  from bil_jax.data import camvid
  from bil_jax.data import faceforensics
  from bil_jax.data import paired_folder
  from bil_jax.data import synthetic

  def prepare_synthetic(data_cfg, workdir):
    b = synthetic.prepare_builder(synthetic.builder_config_from_data_cfg(data_cfg),
                                  paired_folder.default_data_dir(data_cfg, workdir))
    return {s: b for s in ('train', 'test')}

  return {
      'synthetic': prepare_synthetic,
      'faceforensics': faceforensics.prepare_data,
      'bdd100k': bdd100k.prepare_data,
      'camvid': camvid.prepare_data,
      'bdd_camvid': camvid.prepare_bdd_camvid,
      'paired_folder': paired_folder.prepare_data,
  }


def prepare(config, manual_dir: str = None, data_dir: str = None) -> dict:
  """Prepares config.data's dataset; returns {split: number of tasks}."""
  d = config.data
  if manual_dir is not None:
    d.manual_dir = manual_dir
  if data_dir is not None:
    d.data_dir = data_dir
  if not d.data_dir:
    raise ValueError('pass --data_dir (or --config.data.data_dir)')
  table = preparers()
  if d.name not in table:
    raise ValueError(f'data.name {d.name!r} has no preparer; known: '
                     f'{", ".join(sorted(table))}')
  builders = table[d.name](d, workdir=d.data_dir)
  return {s: int(b.info.splits[s].num_examples) for s, b in builders.items()}


def main(argv):
  del argv
  from bil_jax.data import image_io
  # TFDS reports what it generates and where, with progress bars and an ETA per split
  # (on stderr); an error is the last line, after a blank one, so it stands out.
  logging.set_verbosity(logging.INFO)
  config = _CONFIG.value
  if config is None:
    print('error: pass --config=configs/X.py', file=sys.stderr)
    return 2
  try:
    counts = prepare(config, _MANUAL_DIR.value, _DATA_DIR.value)
  except (image_io.DataError, ValueError) as e:
    print('\nerror: ' + ' '.join(str(e).split()), file=sys.stderr)
    return 1
  d = config.data
  for split, n in counts.items():
    print(f'{d.name}/{split}: {n} tasks of {d.image_height}x{d.image_width} '
          f'prepared in {d.data_dir}')
  return 0


if __name__ == '__main__':
  app.run(lambda argv: sys.exit(main(argv)))
