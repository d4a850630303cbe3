r"""Pix2pix trained on BDD100K, tested 1-shot on CamVid clips (Table 3).

  python data_prep/prepare.py --config=configs/bdd_camvid_pix2pix.py \
    --manual_dir=/data/streets --data_dir=/data/tfds
  python -m bil_jax.main --config=configs/bdd_camvid_pix2pix.py --workdir=/tmp/street_pix2pix \
    --config.data.manual_dir=/data/streets --config.data.data_dir=/data/tfds \
    --config.loss.vgg_weights=/data/lpips_vgg.msgpack

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
from bil_jax import paper_configs


def get_config(arg: str = "1shot"):
  return paper_configs.bdd_camvid("pix2pix", arg)
