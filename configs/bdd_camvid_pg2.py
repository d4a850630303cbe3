r"""PG² trained on BDD100K, tested 1-shot on CamVid clips (Table 3).

  python data_prep/prepare.py --config=configs/bdd_camvid_pg2.py \
    --manual_dir=/data/streets --data_dir=/data/tfds
  python -m bil_jax.main --config=configs/bdd_camvid_pg2.py --workdir=/tmp/street_pg2 \
    --config.data.manual_dir=/data/streets --config.data.data_dir=/data/tfds \
    --config.loss.vgg_weights=/data/vgg16.msgpack

/data/streets holds bdd100k/ and camvid/ (or set --config.data.bdd100k_dir and
--config.data.camvid_dir separately).  Arguments after ':': '1shot' (the only
setting of the paper, the default) and 'smoke': the same experiment on the
built-in synthetic data with tiny sizes and steps, so that CI can check it.

Paper settings (Sec. 5.1, 5.3): each BDD100K segmentation-image pair is a
1-shot training task (so pairs are reused to fill support and query sets);
CamVid videos cut into clips of 10 annotated frames, 1 support image and 5
evaluation images per clip; 20 classes (BDD's 19 + void); 128x256 images;
Adam (lr 1e-4, b1 0.5, b2 0.999); 5 tasks per meta-batch, 5 pairs per inner
batch; 50k pre-training and 20k meta-training iterations; 20 IS iterations at
test time; K=5 auxiliary tasks; lambda_a=10, lambda_b=2.
"""
from bil_jax import config_lib

MODEL = "pg2"


def parse_arg(arg: str) -> bool:
  """'' | '1shot', optionally with ',smoke' -> smoke."""
  tokens = [t for t in (arg or "").replace(":", ",").split(",") if t]
  if set(tokens) - {"1shot", "smoke"}:
    raise ValueError(f"config argument {arg!r}: the street setting is 1shot "
                     "only; use '', '1shot' or 'smoke'")
  return "smoke" in tokens


def get_config(arg: str = "1shot"):
  smoke = parse_arg(arg)
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
  c.eval.is_steps = 20          # IS iterations on each test clip
  c.eval.aux_tasks = 5          # K auxiliary tasks (Eq. 3)
  if smoke:
    _smoke(c, height=32, width=64)
  c.lock()
  return c


def _smoke(c, height: int, width: int):
  """Tiny synthetic run with the same structure (1 shot, 20 classes, reuse)."""
  d = c.data
  d.name = "synthetic"
  d.image_height, d.image_width = height, width
  d.num_train_tasks, d.num_test_tasks, d.pairs_per_task = 6, 2, 4
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
