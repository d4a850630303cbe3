r"""Pix2pix on FaceForensics (Tables 1 and 2): 5-shot (default) or 1-shot.

  python data_prep/prepare.py --config=configs/faceforensics_pix2pix.py \
    --manual_dir=/data/faceforensics --data_dir=/data/tfds
  python -m bil_jax.main --config=configs/faceforensics_pix2pix.py:5shot \
    --workdir=/tmp/ff_pix2pix_5shot --config.data.manual_dir=/data/faceforensics \
    --config.data.data_dir=/data/tfds --config.loss.vgg_weights=/data/vgg16.msgpack

Arguments after ':' (comma separated): '5shot' (Table 1) or '1shot'
(Table 2), and 'smoke': the same experiment on the built-in synthetic data with
tiny sizes and steps, so that CI can check that it builds and runs.

Paper settings (Sec. 5.1, 5.3): 7-class maps from facial landmarks, faces
cropped and resized to 128x128; Adam (lr 1e-4, b1 0.5, b2 0.999); 5 tasks per
meta-batch and 5 pairs per inner batch; 50k pre-training and 20k
meta-training iterations; 20 IS iterations at test time; K=5 auxiliary tasks;
lambda_a=10, lambda_b=2; 20 evaluation pairs per test video (Sec. 5.2); no
horizontal flip of the reference image for faces (footnote 3).
"""
from bil_jax import config_lib

MODEL = "pix2pix"


def parse_arg(arg: str):
  """'5shot' | '1shot', optionally with ',smoke' -> (shots, smoke)."""
  tokens = [t for t in (arg or "").replace(":", ",").split(",") if t]
  unknown = set(tokens) - {"5shot", "1shot", "smoke"}
  if unknown or ("5shot" in tokens and "1shot" in tokens):
    raise ValueError(f"config argument {arg!r}: use 5shot or 1shot, "
                     "optionally with ,smoke")
  return (1 if "1shot" in tokens else 5), "smoke" in tokens


def get_config(arg: str = "5shot"):
  shots, smoke = parse_arg(arg)
  c = config_lib.base_config()
  d = c.data
  d.name = "faceforensics"
  d.num_classes = 7             # background, face, eyebrows, eyes, nose, lips, inner mouth
  d.image_height = d.image_width = 128
  d.shots = shots
  d.queries = 5
  d.eval_queries = 20           # "20 pairs per task" (Sec. 5.2)
  d.reuse_pairs = False
  d.augment.flip_reference = False  # footnote 3
  # FaceForensics preparation (bil_jax/data/faceforensics.py).
  d.face_margin = 0.15          # crop margin around the landmarks' box, per side
  d.clips_per_video = 7         # training videos -> 7 clips, 6 of them augmented
  d.frames_per_clip = 30        # evenly spaced frames kept per clip / test video
  d.min_frames = 25             # fewer good frames: the clip is dropped (>= 5 + 20)
  d.prep_seed = 0               # seed of the clip augmentations

  c.model.name = MODEL
  c.model.ngf = 64
  c.model.ndf = 64

  c.loss.lambda_a = 10.0
  c.loss.lambda_b = 2.0
  # The perceptual term needs VGG16 weights, which cannot be downloaded here:
  # convert them with data_prep/convert_torch_weights.py and set
  # --config.loss.vgg_weights=PATH (or --config.loss.lambda_b=0 to train without).
  c.loss.vgg_weights = ""

  c.optim.lr, c.optim.b1, c.optim.b2 = 1e-4, 0.5, 0.999
  c.pretrain.steps = 50_000
  c.pretrain.batch_size = 5
  c.meta.steps = 20_000
  c.meta.meta_batch = 5         # tasks per meta-batch
  c.meta.inner_lr = 1e-4
  c.meta.outer_lr = 1e-4
  c.eval.is_steps = 20          # IS iterations on each test task
  c.eval.aux_tasks = 5          # K auxiliary tasks (Eq. 3)
  if smoke:
    _smoke(c, height=32, width=32)
  c.lock()
  return c


def _smoke(c, height: int, width: int):
  """Tiny synthetic run with the same structure (shots, classes, flags)."""
  d = c.data
  d.name = "synthetic"
  d.image_height, d.image_width = height, width
  d.num_train_tasks, d.num_test_tasks, d.pairs_per_task = 6, 2, 8
  d.queries = d.eval_queries = 2
  c.model.ngf = c.model.ndf = 8
  c.loss.lambda_b = 0.0
  c.pretrain.steps, c.pretrain.batch_size = 2, 2
  c.pretrain.log_every = c.pretrain.checkpoint_every = c.pretrain.image_every = 1
  c.meta.steps, c.meta.meta_batch, c.meta.inner_steps = 2, 2, 1
  c.meta.log_every = c.meta.checkpoint_every = c.meta.image_every = 1
  c.eval.is_steps = c.eval.aux_steps = 2
  c.eval.aux_tasks = c.eval.num_test_tasks = c.eval.grid_tasks = 2
  c.eval.aux_estimator = "first_order"  # a second-order compile per phase is enough for CI
