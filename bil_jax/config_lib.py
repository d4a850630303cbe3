"""The base configuration every experiment config starts from.

Experiment files in ``configs/`` call :func:`base_config` and override what differs.
All configs are returned locked (``ml_collections.ConfigDict.lock``) so that a misspelt
key, on the command line or in a config file, fails instead of being silently added.
"""
import json

import ml_collections
from flax import traverse_util


def _optimizer(name: str, **kwargs) -> ml_collections.ConfigDict:
  """An optimizer entry (bil_jax/optimizers.py): ``{name, lr, clip=0, schedule={name: ""},
  **kwargs}``, i.e. no clipping and a constant learning rate."""
  return ml_collections.ConfigDict(dict(name=name, clip=0.0, schedule=dict(name=""), **kwargs))


def base_config() -> ml_collections.ConfigDict:
  """Returns the paper's defaults (Sec. 5.3) on the built-in synthetic dataset."""
  c = ml_collections.ConfigDict()
  c.seed = 0

  # ---- reliability (docs/reliability.md) --------------------------------------------
  c.nonfinite = "skip"  # a NaN/Inf loss or update: "skip" it (counted, logged as
  # nonfinite_skips) | "stop" with an error naming the step
  c.overwrite = False  # True: a workdir made by a DIFFERENT config has its runs
  # deleted and starts afresh (same config: always resumes)
  c.compilation_cache = "~/.cache/bil_jax/xla"  # persistent XLA compilation cache
  # (a second identical run does not recompile); "" = off

  # ---- data -------------------------------------------------------------------------
  c.data = d = ml_collections.ConfigDict()
  d.name = "synthetic"  # key of the dataset registry in bil_jax.data.registry
  d.data_dir = ""  # TFDS data_dir; "" -> WORKDIR/tfds
  d.manual_dir = ""  # TFDS manual_dir for datasets the user brings
  d.num_classes = 8  # C: classes of the segmentation maps (one-hot input)
  d.image_height = 32
  d.image_width = 32
  d.shots = 5  # n: support pairs per task, T(tr)
  d.queries = 5  # query pairs per task, T(te)
  d.eval_queries = 20  # query pairs per test task at evaluation (Sec. 5.2)
  d.reuse_pairs = False  # tasks with fewer pairs than shots+queries reuse pairs
  # (BDD100K: every task is one pair) instead of failing
  d.val_fraction = 0.1  # folder datasets without a val/ folder (paired_folder,
  # faceforensics, bdd100k): this fraction of the training
  # tasks (videos), evenly spaced by sorted name, is the
  # validation split, left out of training (data/holdout.py)
  # Synthetic-scenes generator (ignored by other datasets; docs/datasets.md).
  d.num_train_tasks = 200
  d.num_val_tasks = 20  # validation scenes: the monitor and every tuning decision
  d.num_test_tasks = 20  # test scenes: read by the final evaluation only
  d.pairs_per_task = 30
  d.synthetic_seed = -1  # -1: the data follow config.seed (each seed draws its own
  # scenes and families); any value >= 0 pins the data
  d.config_seed = c.get_ref("seed")  # always equals config.seed (a reference): set seed,
  # not this; the generator reads it when synthetic_seed=-1
  d.num_families = 0  # >0: scenes come in families (like cities/identities)
  # sharing layout statistics and look; train, val and test
  # task i is in family i % num_families ("seen" families)
  d.unseen_families = 0  # >0 (with num_families>0): val and test each get this many
  # families never seen in training (val's and test's
  # disjoint); half of their tasks (the later N//2) are scenes
  # of them, named {split}_unseen_{i:05d}, the rest
  # {split}_seen_{i:05d}
  d.family_appearance_jitter = 0.1  # a scene's hue shift around its family's (and
  # proportional saturation/value/texture/light jitter)
  d.family_layout_jitter = 0.1  # std of an object's centre around its family slot
  # (units of the image side); sizes/angles scale with it
  d.motion = 1.0  # the pairs of a scene are frames of a clip: objects move,
  # turn and scale, the camera shifts and zooms, the light
  # changes; this scales all of it (0: frames alike)
  # Augmentation (Sec. 5.3): horizontal flip, crop and rotation.
  d.augment = a = ml_collections.ConfigDict()
  a.flip = True
  a.crop_fraction = 0.9  # crop a random window of this fraction, resize back
  a.max_rotation_deg = 10.0
  a.flip_reference = True  # the paper disables it for faces (footnote 3)
  a.reference_source = "self"  # PG² reference made from: "self" the pair's own target
  # (Sec. 5.3, one pair per instance) | "other" another
  # pair of the same task (support: another shot)

  # ---- model ------------------------------------------------------------------------
  c.model = m = ml_collections.ConfigDict()
  m.name = "pix2pix"  # "pix2pix" | "pg2"
  m.ngf = 16  # generator width
  m.ndf = 16  # discriminator width
  m.num_downs = -1  # generator depth; -1 -> derived from the image size
  m.norm = "instance"  # "instance" | "batch" (current-batch statistics)
  m.dropout = 0.5  # dropout of the inner decoder blocks (pix2pix)
  m.d_layers = 3  # PatchGAN n_layers (3 -> 70x70 receptive field)
  m.dtype = "float32"  # "float32" | "bfloat16": the convolutions' compute dtype
  # (parameters, optimizer states, losses stay float32)

  # ---- losses (Eq. 4-7) -------------------------------------------------------------
  c.loss = l = ml_collections.ConfigDict()
  # The paper prints "lambda_a=10 and lambda_a=2"; we read it as lambda_a=10, lambda_b=2.
  l.lambda_a = 10.0  # weight of the adversarial loss (Eq. 5)
  l.lambda_b = 2.0  # weight of the perceptual loss (Eq. 6)
  l.lambda_l1 = 1.0  # weight of the L1 loss (Eq. 4); 1 in Eq. 7
  l.gan_mode = "bce"  # "bce" (non-saturating, on logits) | "lsgan"
  l.perceptual = "lpips_vgg"  # kind of L_P (Eq. 6): "lpips_vgg" = LPIPS v0.1 with the VGG16
  # trunk and learned heads (the paper) | "vgg_mse" = MSE of raw
  # VGG16 relu1_2..relu5_3 activations summed over layers
  l.vgg_weights = ""  # frozen weights of L_P when lambda_b > 0: for lpips_vgg the file
  # of data_prep/convert_lpips_weights.py --net=vgg; for vgg_mse
  # that file or data_prep/convert_torch_weights.py's VGG16 file

  # ---- optimisation (Sec. 5.3: Adam, lr 1e-4, b1 0.5, b2 0.999) ---------------------
  # Every optimizer is an Optax name plus its keyword arguments (bil_jax/optimizers.py):
  #   {name: any optax optimizer ("adam", "sgd", "adamw", "lion", "rmsprop", ...),
  #    lr: learning rate, clip: global-norm gradient clipping (0 = off),
  #    schedule: {name: an optax schedule ("" = constant lr), **its kwargs; init_value
  #              defaults to lr}, any other key: a keyword argument of the optax function}
  # Change one value with --config.optim.lr=2e-4; switch optimizer by replacing the dict:
  #   --config.meta.inner_optimizer="{'name': 'lion', 'lr': 1e-5, 'b1': 0.9}"
  # (keys left out take optax's defaults; clip and schedule default to off).
  c.optim = _optimizer("adam", lr=1e-4, b1=0.5, b2=0.999)  # pre-training of G and D

  # ---- conventional (pre-)training, Alg. 1 lines 1-5 --------------------------------
  c.pretrain = p = ml_collections.ConfigDict()
  p.steps = 50_000
  p.batch_size = 5
  p.log_every = 100
  p.checkpoint_every = 1000
  p.image_every = 5000

  # ---- meta-training, Alg. 1 lines 6-22 ---------------------------------------------
  c.meta = mt = ml_collections.ConfigDict()
  mt.steps = 20_000
  mt.meta_batch = 5  # tasks per meta-batch
  mt.estimator = "second_order"  # second_order | first_order | reptile | truncated | es |
  # implicit | meta_sgd, or package.module:function
  # (docs/estimators.md)
  mt.estimator_options = ""  # "name=value,..." of the estimator's keyword-only options,
  # e.g. "backprop_steps=2" (truncated), "pairs=8,sigma=0.01" (es)
  mt.inner_steps = 5  # K: GAN updates of the IS adaptation during meta-training
  # IS (inner) optimizer, differentiated through by the meta-gradient; eps_root keeps
  # Adam's square root differentiable where a second moment is exactly 0.
  mt.inner_optimizer = _optimizer("adam", lr=1e-4, b1=0.5, b2=0.999, eps_root=1e-12)
  mt.outer_optimizer = _optimizer("adam", lr=1e-4, b1=0.5, b2=0.999)  # GP update
  mt.remat = "none"  # "none" | "step" (jax.checkpoint each inner step) |
  # "nested" (~sqrt(K) checkpointed segments: carries ~ sqrt(K))
  mt.adapt_mask = ""  # ANIL-style partial adaptation: comma-separated fnmatch
  # patterns of the parameters the IS adaptation updates, e.g.
  # "G/*" or "*/Conv_0/*" (others stay at their GP values but
  # are still meta-learned); "" = all
  mt.from_scratch = False  # True: do not start from the pre-training checkpoint
  mt.log_every = 50
  mt.checkpoint_every = 500
  mt.image_every = 2000
  mt.num_hosts = 1  # >1: call jax.distributed.initialize()
  mt.mesh_shape = ""  # devices of meta-training as "TxB": T split the tasks of a
  # meta-batch, B the shots and queries of each task (inner
  # gradients and batch-norm moments averaged over B);
  # "" = automatic: the largest T dividing meta_batch and the
  # device count whose B = devices / T divides data.shots
  # and data.queries (bil_jax/parallel.py); no fit: an error
  # naming the device counts that work

  # ---- test phase, Alg. 2 -----------------------------------------------------------
  c.eval = e = ml_collections.ConfigDict()
  e.is_steps = 20  # IS adaptation steps on the unseen task (Sec. 5.3)
  e.aux_tasks = 5  # K auxiliary tasks retrieved by Eq. 3
  e.aux_steps = 20  # alternating GP fine-tuning steps on the auxiliary tasks
  e.aux_estimator = ""  # meta-gradient of Aux fine-tuning; "" -> meta.estimator
  e.aux_lr = -1.0  # GP fine-tuning learning rate; < 0 -> meta.outer_optimizer.lr
  e.num_test_tasks = -1  # -1 -> all test tasks
  e.augment_shots = False  # True: flip/crop/rotate the n support shots as in training;
  # False: adapt on the raw pairs (queries are always raw)
  e.lpips_weights = ""  # Flax LPIPS checkpoint from data_prep/convert_lpips_weights.py
  e.grid_tasks = 4  # test tasks shown in the Fig. 3-style PNG grid
  # Tuned fine-tuning (docs/evidence.md): every n-shot row takes the IS learning rate and
  # step count of this grid that scores best (SSIM) on the validation tasks; chosen at the
  # start of the test phase. An empty grid: meta.inner_optimizer.lr / eval.is_steps.
  e.tune_is_lrs = (1e-4, 3e-4, 1e-3)
  e.tune_is_steps = (10, 20, 40)
  e.num_val_tasks = 8  # validation tasks the tuning scores (-1: all)

  # ---- X+, the compute-matched baseline (docs/evidence.md) -------------------------
  # Conventional training continued from the pre-training checkpoint for as many
  # pair-gradients as meta-training uses (bil_jax/xplus.py), batch pretrain.batch_size.
  c.xplus = x = ml_collections.ConfigDict()
  x.lr = -1.0  # < 0: the lr --mode=tune chose (WORKDIR/xplus_tuning.json),
  # else optim.lr
  x.lr_grid = (5e-5, 1e-4, 3e-4)  # the learning rates --mode=tune compares on validation
  return c


# ---- helpers of the paper's config files (configs/faces.py, configs/streets.py) ----------
MODELS = ("pg2", "pix2pix")


def parse_arg(arg: str, shots: tuple, file: str):
  """'model,Nshot,smoke' (any order, each optional) -> (model, shots, smoke).

  ``shots``: the shot counts the file allows, the default first. The model defaults to
  PG². Raises a one-line ValueError naming ``file`` for an unknown or repeated token.
  """
  tokens = [t for t in (arg or "").replace(":", ",").split(",") if t]
  allowed = {*MODELS, *(f"{n}shot" for n in shots), "smoke"}
  models = [t for t in tokens if t in MODELS]
  shot_tokens = [t for t in tokens if t.endswith("shot")]
  if set(tokens) - allowed or len(models) > 1 or len(shot_tokens) > 1:
    raise ValueError(f"{file}: config argument {arg!r}: use a model ({' | '.join(MODELS)}), "
                     f"{' | '.join(f'{n}shot' for n in shots)} and smoke, comma separated")
  n = int(shot_tokens[0][:-4]) if shot_tokens else shots[0]
  return (models[0] if models else MODELS[0]), n, "smoke" in tokens


def paper_training(c: ml_collections.ConfigDict, model: str) -> None:
  """The settings of Sec. 5.3 both dataset families share: 64-wide G and D, Eq. 7 with
  lambda_a=10, lambda_b=2 and LPIPS-VGG, Adam (1e-4, 0.5, 0.999) everywhere, 5 tasks per
  meta-batch and 5 pairs per batch, 50k + 20k iterations, 20 IS steps, K=5 Aux tasks."""
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
  c.meta.meta_batch = 5  # tasks per meta-batch
  c.meta.inner_optimizer.lr = 1e-4
  c.meta.outer_optimizer.lr = 1e-4
  c.eval.is_steps = 20  # IS iterations on each test task
  c.eval.aux_tasks = 5  # K auxiliary tasks (Eq. 3)


def make_smoke(c: ml_collections.ConfigDict, height: int, width: int, pairs_per_task: int) -> None:
  """Turns a paper config into a tiny synthetic run with the same structure (shots,
  classes, flags), so that CI can check that it builds and runs."""
  d = c.data
  d.name = "synthetic"
  d.image_height, d.image_width = height, width
  d.num_train_tasks, d.num_test_tasks, d.pairs_per_task = 6, 2, pairs_per_task
  d.num_val_tasks = 2
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
  c.eval.tune_is_lrs = c.eval.tune_is_steps = ()  # no tuning: one adaptation compile less
  c.eval.num_val_tasks = 2


def flat_config(config: ml_collections.ConfigDict) -> dict:
  """{'a.b': value} of a ConfigDict (JSON-normalised: tuples become lists; empty
  sub-dicts are left out)."""
  return traverse_util.flatten_dict(json.loads(config.to_json_best_effort()), sep=".")
