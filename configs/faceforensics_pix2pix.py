r"""Pix2pix on FaceForensics (Tables 1 and 2): 5-shot (default) or 1-shot.

  python data_prep/prepare.py --config=configs/faceforensics_pix2pix.py \
    --manual_dir=/data/faceforensics --data_dir=/data/tfds
  python -m bil_jax.main --config=configs/faceforensics_pix2pix.py:5shot \
    --workdir=/tmp/ff_pix2pix_5shot --config.data.manual_dir=/data/faceforensics \
    --config.data.data_dir=/data/tfds --config.loss.vgg_weights=/data/lpips_vgg.msgpack

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
from bil_jax import paper_configs


def get_config(arg: str = "5shot"):
  return paper_configs.faceforensics("pix2pix", arg)
