r"""FaceForensics (Tables 1 and 2): PG² or Pix2pix, 5-shot (Table 1) or 1-shot (Table 2).

  python data_prep/prepare.py --config=configs/faces.py \
    --manual_dir=/data/faceforensics --data_dir=/data/tfds
  python -m bil_jax.main --config=configs/faces.py:pg2,5shot \
    --workdir=/tmp/ff_pg2_5shot --config.data.manual_dir=/data/faceforensics \
    --config.data.data_dir=/data/tfds --config.loss.vgg_weights=/data/lpips_vgg.msgpack

Argument after ':' (comma separated, each optional): the model, 'pg2' (default) or
'pix2pix'; '5shot' (default) or '1shot'; and 'smoke': the same experiment on the
built-in synthetic data with tiny sizes and steps, so that CI can check that it builds
and runs (':smoke' alone is PG², 5-shot).

Paper settings (Sec. 5.1, 5.3): 7-class maps from facial landmarks, faces
cropped and resized to 128x128; Adam (lr 1e-4, b1 0.5, b2 0.999); 5 tasks per
meta-batch and 5 pairs per inner batch; 50k pre-training and 20k
meta-training iterations; 20 IS iterations at test time; K=5 auxiliary tasks;
lambda_a=10, lambda_b=2; 20 evaluation pairs per test video (Sec. 5.2); no
horizontal flip of the reference image for faces (footnote 3).
"""
from bil_jax import config_lib


def get_config(arg: str = "pg2,5shot"):
  model, shots, smoke = config_lib.parse_arg(arg, shots=(5, 1), file="configs/faces.py")
  c = config_lib.base_config()
  d = c.data
  d.name = "faceforensics"
  d.num_classes = 7  # background, face, eyebrows, eyes, nose, lips, inner mouth
  d.image_height = d.image_width = 128
  d.shots = shots
  d.queries = 5
  d.eval_queries = 20  # "20 pairs per task" (Sec. 5.2)
  d.reuse_pairs = False
  d.augment.flip_reference = False  # footnote 3
  # FaceForensics preparation (bil_jax/data/faceforensics.py).
  d.face_margin = 0.15  # crop margin around the landmarks' box, per side
  d.clips_per_video = 7  # training videos -> 7 clips, 6 of them augmented
  d.frames_per_clip = 30  # evenly spaced frames kept per clip / test video
  d.min_frames = 25  # fewer good frames: the clip is dropped (>= 5 + 20)
  d.prep_seed = 0  # seed of the clip augmentations
  config_lib.paper_training(c, model)
  if smoke:
    config_lib.make_smoke(c, height=32, width=32, pairs_per_task=8)
  c.lock()
  return c
