r"""BDD100K -> CamVid (Table 3): PG² or Pix2pix trained on BDD100K, tested 1-shot on
CamVid clips.

  python data_prep/prepare.py --config=configs/streets.py \
    --manual_dir=/data/streets --data_dir=/data/tfds
  python -m bil_jax.main --config=configs/streets.py:pg2 --workdir=/tmp/street_pg2 \
    --config.data.manual_dir=/data/streets --config.data.data_dir=/data/tfds \
    --config.loss.vgg_weights=/data/lpips_vgg.msgpack

/data/streets holds bdd100k/ and camvid/ (or set --config.data.bdd100k_dir and
--config.data.camvid_dir separately). Argument after ':' (comma separated, each
optional): the model, 'pg2' (default) or 'pix2pix'; '1shot' (the paper's only setting,
the default); and 'smoke': the same experiment on the built-in synthetic data with tiny
sizes and steps, so that CI can check it (':smoke' alone is PG²).

Paper settings (Sec. 5.1-5.3): each BDD100K segmentation-image pair is a 1-shot training
task (so pairs are reused to fill support and query sets); CamVid videos cut into 69
clips of 10 annotated frames, 1 support image and 20 evaluation images per clip (69 x 20
= 1380, Sec. 5.2); 20 classes (BDD's 19 + void); 128x256 images; Adam (lr 1e-4, b1 0.5,
b2 0.999); 5 tasks per meta-batch, 5 pairs per inner batch; 50k pre-training and 20k
meta-training iterations; 20 IS iterations at test time; K=5 auxiliary tasks;
lambda_a=10, lambda_b=2.

Deviation: a clip has 10 annotated frames, fewer than 1 + 20, so its 20 evaluation pairs
reuse frames (data.reuse_pairs: the frames are taken in a random order and repeated
cyclically). Each of the 9 other frames is a query twice, and so is the support frame
itself: 2 of the 20 scores are on the image the model adapted to.
"""
from bil_jax import config_lib


def get_config(arg: str = "pg2,1shot"):
  model, _, smoke = config_lib.parse_arg(arg, shots=(1,), file="configs/streets.py")
  c = config_lib.base_config()
  d = c.data
  d.name = "bdd_camvid"  # train: BDD100K pairs; test: CamVid clips
  d.num_classes = 20  # BDD100K's 19 classes + void (255 -> 19)
  d.image_height, d.image_width = 128, 256
  d.shots = 1
  d.queries = 5
  d.eval_queries = 20  # 20 evaluation pairs per CamVid clip (Sec. 5.2), reused
  d.reuse_pairs = True  # a BDD100K task is ONE pair; a clip has 10 < 1 + 20 frames
  d.bdd100k_dir = ""  # "" -> MANUAL_DIR/bdd100k (or MANUAL_DIR itself)
  d.camvid_dir = ""  # "" -> MANUAL_DIR/camvid
  d.clip_length = 10  # successive annotated CamVid frames per clip
  config_lib.paper_training(c, model)
  if smoke:
    config_lib.make_smoke(c, height=32, width=64, pairs_per_task=4)
  c.lock()
  return c
