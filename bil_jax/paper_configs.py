"""The paper's experiments (Tables 1-3) as config builders shared by ``configs/``.

``configs/faceforensics_{pg2,pix2pix}.py`` and ``configs/bdd_camvid_{pg2,pix2pix}.py``
differ only in the model; they call :func:`faceforensics` and :func:`bdd_camvid`.
"""
from bil_jax import config_lib


def parse_face_arg(arg: str):
  """'5shot' | '1shot', optionally with ',smoke' -> (shots, smoke)."""
  tokens = [t for t in (arg or "").replace(":", ",").split(",") if t]
  unknown = set(tokens) - {"5shot", "1shot", "smoke"}
  if unknown or ("5shot" in tokens and "1shot" in tokens):
    raise ValueError(f"config argument {arg!r}: use 5shot or 1shot, "
                     "optionally with ,smoke")
  return (1 if "1shot" in tokens else 5), "smoke" in tokens


def faceforensics(model: str, arg: str = "5shot"):
  """FaceForensics config for ``model`` ("pg2" | "pix2pix"); ``arg`` as in the config files."""
  shots, smoke = parse_face_arg(arg)
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

  c.model.name = model
  c.model.ngf = 64
  c.model.ndf = 64

  c.loss.lambda_a = 10.0
  c.loss.lambda_b = 2.0
  c.loss.perceptual = "lpips_vgg"  # Eq. 6 as the paper defines it: LPIPS with VGG16
  # Its weights cannot be downloaded here: convert torchvision's VGG16 and the lpips
  # wheel's v0.1 vgg.pth with `python -m data_prep.convert_lpips_weights --net=vgg`
  # and set --config.loss.vgg_weights=PATH (or --config.loss.lambda_b=0 to train without).
  c.loss.vgg_weights = ""

  c.optim.lr, c.optim.b1, c.optim.b2 = 1e-4, 0.5, 0.999
  c.pretrain.steps = 50_000
  c.pretrain.batch_size = 5
  c.meta.steps = 20_000
  c.meta.meta_batch = 5         # tasks per meta-batch
  c.meta.inner_optimizer.lr = 1e-4
  c.meta.outer_optimizer.lr = 1e-4
  c.eval.is_steps = 20          # IS iterations on each test task
  c.eval.aux_tasks = 5          # K auxiliary tasks (Eq. 3)
  if smoke:
    make_smoke(c, height=32, width=32, pairs_per_task=8)
  c.lock()
  return c


def parse_street_arg(arg: str) -> bool:
  """'' | '1shot', optionally with ',smoke' -> smoke."""
  tokens = [t for t in (arg or "").replace(":", ",").split(",") if t]
  if set(tokens) - {"1shot", "smoke"}:
    raise ValueError(f"config argument {arg!r}: the street setting is 1shot "
                     "only; use '', '1shot' or 'smoke'")
  return "smoke" in tokens


def bdd_camvid(model: str, arg: str = "1shot"):
  """BDD100K -> CamVid config for ``model`` ("pg2" | "pix2pix"); ``arg`` as in the config files."""
  smoke = parse_street_arg(arg)
  c = config_lib.base_config()
  d = c.data
  d.name = "bdd_camvid"         # train: BDD100K pairs; test: CamVid clips
  d.num_classes = 20            # BDD100K's 19 classes + void (255 -> 19)
  d.image_height, d.image_width = 128, 256
  d.shots = 1
  d.queries = 5
  d.eval_queries = 5            # 5 evaluation images per CamVid clip
  d.reuse_pairs = True          # a BDD100K task is ONE pair
  d.bdd100k_dir = ""            # "" -> MANUAL_DIR/bdd100k (or MANUAL_DIR itself)
  d.camvid_dir = ""             # "" -> MANUAL_DIR/camvid
  d.clip_length = 10            # successive annotated CamVid frames per clip

  c.model.name = model
  c.model.ngf = 64
  c.model.ndf = 64

  c.loss.lambda_a = 10.0
  c.loss.lambda_b = 2.0
  c.loss.perceptual = "lpips_vgg"  # Eq. 6 as the paper defines it: LPIPS with VGG16
  # Its weights cannot be downloaded here: convert torchvision's VGG16 and the lpips
  # wheel's v0.1 vgg.pth with `python -m data_prep.convert_lpips_weights --net=vgg`
  # and set --config.loss.vgg_weights=PATH (or --config.loss.lambda_b=0 to train without).
  c.loss.vgg_weights = ""

  c.optim.lr, c.optim.b1, c.optim.b2 = 1e-4, 0.5, 0.999
  c.pretrain.steps = 50_000
  c.pretrain.batch_size = 5
  c.meta.steps = 20_000
  c.meta.meta_batch = 5         # tasks per meta-batch
  c.meta.inner_optimizer.lr = 1e-4
  c.meta.outer_optimizer.lr = 1e-4
  c.eval.is_steps = 20          # IS iterations on each test clip
  c.eval.aux_tasks = 5          # K auxiliary tasks (Eq. 3)
  if smoke:
    make_smoke(c, height=32, width=64, pairs_per_task=4)
  c.lock()
  return c


def make_smoke(c, height: int, width: int, pairs_per_task: int):
  """Turns a paper config into a tiny synthetic run with the same structure (shots,
  classes, flags), so that CI can check that it builds and runs."""
  d = c.data
  d.name = "synthetic"
  d.image_height, d.image_width = height, width
  d.num_train_tasks, d.num_test_tasks, d.pairs_per_task = 6, 2, pairs_per_task
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
