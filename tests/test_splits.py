"""Train / validation / test: the hold-out rule, the folder datasets' validation split,
load_data's checks, and that nothing reads the test split before the final evaluation."""
import contextlib
import importlib.util
import io
import os
import sys

import numpy as np
import pytest

from bil_jax import config_lib
from bil_jax.data import holdout
from bil_jax.data import image_io
from bil_jax.data import loading
from bil_jax.data import paired_folder
from bil_jax.data import registry
from bil_jax.data import tasks as tasks_lib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fixtures_datasets as fx  # pylint: disable=g-import-not-at-top,wrong-import-position

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def data_cfg(**kw):
  d = config_lib.base_config().data
  for k, v in kw.items():
    d[k] = v
  return d


def load(d, split):
  with contextlib.redirect_stdout(io.StringIO()):
    return registry.load_tasks(d, split, workdir='/nonexistent')


# ---------------------------------------------------------------------------
# The hold-out rule
# ---------------------------------------------------------------------------


def test_held_out_items_are_evenly_spaced_by_sorted_name():
  names = [f't{i}' for i in range(10)]
  shuffled = list(np.random.default_rng(0).permutation(names))
  # k = round(0.2 * 10) = 2: items floor(2.5) and floor(7.5) of the sorted names.
  assert holdout.held_out(shuffled, 0.2, 'x') == ['t2', 't7']
  assert holdout.held_out(names, 0.01, 'x') == ['t5']  # at least one
  with pytest.raises(image_io.DataError, match='leaves none to train on') as err:
    holdout.held_out(['a'], 0.1, '/data/root/train')
  assert str(err.value).startswith('/data/root/train') and '\n' not in str(err.value)
  for bad in (0.0, 1.0, -0.5):
    with pytest.raises(ValueError, match='data.val_fraction'):
      holdout.val_fraction(data_cfg(val_fraction=bad))


def test_items_split_train_into_disjoint_train_and_val():
  listing = {'train': ['d', 'a', 'c', 'b', 'e'], 'val': ['v'], 'test': ['z']}
  get = lambda split, folder: holdout.items(split, listing.get, folder, 0.4, str)
  assert get('train', False) == ('train', ['a', 'c', 'e'])
  assert get('val', False) == ('train', ['b', 'd'])
  assert get('test', False) == ('test', ['z'])
  assert get('train', True) == ('train', ['a', 'b', 'c', 'd', 'e'])
  assert get('val', True) == ('val', ['v'])


# ---------------------------------------------------------------------------
# Folder datasets
# ---------------------------------------------------------------------------


def test_paired_folder_holds_out_a_fraction_or_reads_val(tmp_path):
  root = tmp_path / 'root'
  fx.write_paired_folder(str(root), {'train': {f't{i}': 4 for i in range(5)}, 'test': {'c': 4}},
                         num_classes=5, hw=(8, 8))
  d = data_cfg(name='paired_folder', num_classes=5, image_height=8, image_width=8,
               manual_dir=str(root), data_dir=str(tmp_path / 'tfds'), shots=2, queries=2,
               eval_queries=2, val_fraction=0.4)
  tr, va, te = (load(d, s) for s in ('train', 'val', 'test'))
  assert tr.names == ('t0', 't2', 't4') and va.names == ('t1', 't3')
  assert te.names == ('c',)
  # The held-out tasks are the training folders' own pairs, not copies of kept ones.
  images = [ts.task_images(t).tobytes() for ts in (tr, va) for t in range(ts.num_tasks)]
  assert len(set(images)) == 5
  # A val/ folder, added later, replaces the held-out fraction (a new prepared copy).
  fx.write_paired_folder(str(root), {'val': {'v': 4}}, num_classes=5, hw=(8, 8))
  assert load(d, 'val').names == ('v',)
  assert load(d, 'train').names == tuple(f't{i}' for i in range(5))
  h = paired_folder.path_hash(str(root))
  assert sorted(os.listdir(
      tmp_path / 'tfds' / 'paired_folder_tasks')) == [f'c5_h8_w8_{h}_v0p4', f'c5_h8_w8_{h}_vdir']


def test_faceforensics_holds_out_whole_videos_processed_as_test_videos(tmp_path):
  """No val/ folder: the held-out training video (vidB, the later of two) is one
  unaugmented task, as a test video is, and none of its clips is trained on."""
  root = tmp_path / 'm'
  fx.write_faceforensics(str(tmp_path / 'raw'), size=64)
  root.mkdir()
  for folder in ('train', 'test'):
    os.symlink(tmp_path / 'raw' / folder, root / folder)
  d = data_cfg(name='faceforensics', num_classes=7, image_height=16, image_width=16,
               manual_dir=str(root), data_dir=str(tmp_path / 'tfds'), shots=1, queries=1,
               eval_queries=1)
  d.frames_per_clip, d.min_frames = 3, 2
  tr, va = load(d, 'train'), load(d, 'val')
  assert va.names == ('vidB',) and va.task_sizes().tolist() == [3]
  assert tr.names == tuple(f'vidA_c{c}' for c in (0, 2, 3, 4, 5, 6))


# ---------------------------------------------------------------------------
# load_data
# ---------------------------------------------------------------------------


def tiny_synthetic(tmp_path):
  c = config_lib.base_config()
  c.data.image_height = c.data.image_width = 16
  c.data.num_train_tasks, c.data.num_val_tasks, c.data.num_test_tasks = 4, 2, 3
  c.data.pairs_per_task = 8
  c.data.data_dir = str(tmp_path / 'tfds')
  return c


def test_load_data_returns_three_disjoint_checked_splits(tmp_path, monkeypatch):
  c = tiny_synthetic(tmp_path)
  data = loading.load_data(c, str(tmp_path))
  assert isinstance(data, loading.Splits)
  assert [ts.num_tasks for ts in data] == [4, 2, 3]
  names = [set(ts.names) for ts in data]
  assert not (names[0] & names[1] or names[0] & names[2] or names[1] & names[2])
  only = loading.load_data(c, str(tmp_path), loading.TRAINING_SPLITS)
  assert only.test is None and only.val.names == data.val.names
  # A split whose images have another size: one line naming the split.
  real = registry.load_tasks
  monkeypatch.setattr(
      registry, 'load_tasks', lambda d, s, w:
      (real(d, s, w).subset([0])
       if s != 'val' else tasks_lib.from_tasks([('v', np.zeros(
           (1, 8, 8), np.uint8), np.zeros((1, 8, 8, 3), np.uint8))], 8)))
  with pytest.raises(ValueError, match=r"^data split 'val' has images of size \(8, 8\)"):
    loading.load_data(c, str(tmp_path))


# ---------------------------------------------------------------------------
# Nothing reads the test split before the final evaluation
# ---------------------------------------------------------------------------


class _EvaluateReached(Exception):
  pass


def smoke_config(tmp_path):
  spec = importlib.util.spec_from_file_location('c', os.path.join(REPO, 'configs', 'synthetic.py'))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  c = mod.get_config('smoke')
  c.data.image_height = c.data.image_width = 16
  c.model.ngf = c.model.ndf = 4
  c.model.d_layers, c.model.num_downs = 1, 2
  # One pre-training step (a checkpoint for meta-training to start from); meta-training
  # runs its validation probe at step 0 only (its step's compile would triple the time).
  c.pretrain.steps, c.meta.steps = 1, 0
  c.data.data_dir = str(tmp_path / 'tfds')
  c.compilation_cache = ''
  return c


def test_training_never_reads_the_test_split_and_evaluation_does(tmp_path, monkeypatch):
  """Pre-training, meta-training (with their validation probes), X+'s learning-rate grid
  and X+ at smoke size read 'train' and 'val' only; --mode=evaluate reads 'test'. A mode
  that tunes or screens belongs in the first list too."""
  from bil_jax import evaluate, pipeline, xplus  # pylint: disable=g-import-not-at-top
  reads = []
  real = registry.load_tasks

  def spy(d, split, workdir):
    reads.append(split)
    if split == 'test':
      raise AssertionError("the test split was read before the final evaluation")
    return real(d, split, workdir)

  monkeypatch.setattr(registry, 'load_tasks', spy)
  c = smoke_config(tmp_path)
  c.xplus.lr_grid = (c.optim.lr,)  # for --mode=tune below
  workdir = str(tmp_path / 'w')
  pipeline.train_and_evaluate(c, workdir, 'pretrain')
  # meta.steps=0 is refused by the config check (a user's metatrain needs steps); here the
  # phase's data loading and step-0 probe are what is checked, so the check is skipped.
  monkeypatch.setattr(pipeline.validate, 'check', lambda *a, **k: None)
  pipeline.train_and_evaluate(c, workdir, 'metatrain')
  assert set(reads) == {'train', 'val'} and os.path.isfile(
      os.path.join(workdir, 'meta', 'heldout_adaptation_0000000.json'))
  # X+'s learning-rate grid (--mode=tune) scores its runs on validation (one rate here), and
  # X+ itself trains on 'train' (with meta.steps=0 neither runs a step).
  pipeline.train_and_evaluate(c, workdir, 'tune')
  pipeline.train_and_evaluate(c, workdir, 'xplus')
  assert set(reads) == {'train', 'val'} and os.path.isfile(os.path.join(workdir, xplus.TUNING_FILE))
  assert os.path.isfile(os.path.join(workdir, 'xplus', xplus.LR_FILE))

  # Evaluation reads 'test' (stopped right after loading: its programs are not compiled).
  reads.clear()
  monkeypatch.setattr(registry, 'load_tasks', lambda d, s, w: (reads.append(s), real(d, s, w))[1])

  def stop(*_):
    raise _EvaluateReached

  monkeypatch.setattr(evaluate.builders, 'build_spec', stop)
  with pytest.raises(_EvaluateReached):
    pipeline.train_and_evaluate(c, workdir, 'evaluate')
  assert 'test' in reads
