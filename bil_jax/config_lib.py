"""The base configuration every experiment config starts from.

Experiment files in ``configs/`` call :func:`base_config` and override what differs.
All configs are returned locked (``ml_collections.ConfigDict.lock``) so that a misspelt
key, on the command line or in a config file, fails instead of being silently added.
"""
import ml_collections


def _optimizer(name: str, **kwargs) -> ml_collections.ConfigDict:
  """An optimizer entry (bil_jax/optimizers.py): ``{name, lr, clip=0, schedule={name: ""},
  **kwargs}``, i.e. no clipping and a constant learning rate."""
  return ml_collections.ConfigDict(dict(name=name, clip=0.0, schedule=dict(name=""), **kwargs))


def base_config() -> ml_collections.ConfigDict:
  """Returns the paper's defaults (Sec. 5.3) on the built-in synthetic dataset."""
  c = ml_collections.ConfigDict()
  c.seed = 0

  # ---- reliability (docs/reliability.md) --------------------------------------------
  c.nonfinite = "skip"          # a NaN/Inf loss or update: "skip" it (counted, logged as
                                # nonfinite_skips) | "stop" with an error naming the step
  c.overwrite = False           # True: a workdir made by a DIFFERENT config has its runs
                                # deleted and starts afresh (same config: always resumes)
  c.compilation_cache = "~/.cache/bil_jax/xla"  # persistent XLA compilation cache
                                # (a second identical run does not recompile); "" = off
  c.debug_nan_step = -1         # TEST ONLY fault injection: the update that produces this
                                # step (1-based) gets NaN target images; -1 = off

  # ---- data -------------------------------------------------------------------------
  c.data = d = ml_collections.ConfigDict()
  d.name = "synthetic"          # key of the dataset registry in bil_jax.data.registry
  d.data_dir = ""               # TFDS data_dir; "" -> WORKDIR/tfds
  d.manual_dir = ""             # TFDS manual_dir for datasets the user brings
  d.num_classes = 8             # C: classes of the segmentation maps (one-hot input)
  d.image_height = 32
  d.image_width = 32
  d.shots = 5                   # n: support pairs per task, T(tr)
  d.queries = 5                 # query pairs per task, T(te)
  d.eval_queries = 20           # query pairs per test task at evaluation (Sec. 5.2)
  d.reuse_pairs = False         # tasks with fewer pairs than shots+queries reuse pairs
                                # (BDD100K: every task is one pair) instead of failing
  # Synthetic-scenes generator (ignored by other datasets).
  d.num_train_tasks = 200
  d.num_test_tasks = 20
  d.pairs_per_task = 30
  d.synthetic_seed = 1234
  d.num_families = 0            # >0: scenes come in families (like cities/identities)
                                # sharing layout statistics and look; task i is in
                                # family i % num_families, in train and test alike
  d.family_appearance_jitter = 0.1  # a scene's hue shift around its family's (and
                                # proportional saturation/value/texture/light jitter)
  d.family_layout_jitter = 0.06 # std of a shape's centre around its family slot
                                # (units of the image side); sizes/angles scale with it
  # Augmentation (Sec. 5.3): horizontal flip, crop and rotation.
  d.augment = a = ml_collections.ConfigDict()
  a.flip = True
  a.crop_fraction = 0.9         # crop a random window of this fraction, resize back
  a.max_rotation_deg = 10.0
  a.flip_reference = True       # the paper disables it for faces (footnote 3)
  a.reference_source = "self"   # PG² reference made from: "self" the pair's own target
                                # (Sec. 5.3, one pair per instance) | "other" another
                                # pair of the same task (support: another shot)

  # ---- model ------------------------------------------------------------------------
  c.model = m = ml_collections.ConfigDict()
  m.name = "pix2pix"            # "pix2pix" | "pg2"
  m.ngf = 16                    # generator width
  m.ndf = 16                    # discriminator width
  m.num_downs = -1              # generator depth; -1 -> derived from the image size
  m.norm = "instance"           # "instance" | "batch" (current-batch statistics)
  m.dropout = 0.5               # dropout of the inner decoder blocks (pix2pix)
  m.d_layers = 3                # PatchGAN n_layers (3 -> 70x70 receptive field)

  # ---- losses (Eq. 4-7) -------------------------------------------------------------
  c.loss = l = ml_collections.ConfigDict()
  # The paper prints "lambda_a=10 and lambda_a=2"; we read it as lambda_a=10, lambda_b=2.
  l.lambda_a = 10.0             # weight of the adversarial loss (Eq. 5)
  l.lambda_b = 2.0              # weight of the perceptual loss (Eq. 6)
  l.lambda_l1 = 1.0             # weight of the L1 loss (Eq. 4); 1 in Eq. 7
  l.gan_mode = "bce"            # "bce" (non-saturating, on logits) | "lsgan"
  l.perceptual = "lpips_vgg"    # kind of L_P (Eq. 6): "lpips_vgg" = LPIPS v0.1 with the VGG16
                                # trunk and learned heads (the paper) | "vgg_mse" = MSE of raw
                                # VGG16 relu1_2..relu5_3 activations summed over layers
  l.vgg_weights = ""            # frozen weights of L_P when lambda_b > 0: for lpips_vgg the file
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
  mt.meta_batch = 5             # tasks per meta-batch
  mt.estimator = "second_order" # second_order | first_order | reptile | truncated | es |
                                # implicit | meta_sgd, or package.module:function
                                # (docs/estimators.md)
  mt.estimator_options = ""     # "name=value,..." of the estimator's keyword-only options,
                                # e.g. "backprop_steps=2" (truncated), "pairs=8,sigma=0.01" (es)
  mt.inner_steps = 5            # K: GAN updates of the IS adaptation during meta-training
  # IS (inner) optimizer, differentiated through by the meta-gradient; eps_root keeps
  # Adam's square root differentiable where a second moment is exactly 0.
  mt.inner_optimizer = _optimizer("adam", lr=1e-4, b1=0.5, b2=0.999, eps_root=1e-12)
  mt.outer_optimizer = _optimizer("adam", lr=1e-4, b1=0.5, b2=0.999)  # GP update
  mt.remat = "none"             # "none" | "step" (jax.checkpoint each inner step) |
                                # "nested" (~sqrt(K) checkpointed segments: carries ~ sqrt(K))
  mt.adapt_mask = ""            # ANIL-style partial adaptation: comma-separated fnmatch
                                # patterns of the parameters the IS adaptation updates, e.g.
                                # "G/*" or "*/Conv_0/*" (others stay at their GP values but
                                # are still meta-learned); "" = all
  mt.from_scratch = False       # True: do not start from the pre-training checkpoint
  mt.log_every = 50
  mt.checkpoint_every = 500
  mt.image_every = 2000
  mt.num_hosts = 1              # >1: call jax.distributed.initialize()

  # ---- test phase, Alg. 2 -----------------------------------------------------------
  c.eval = e = ml_collections.ConfigDict()
  e.is_steps = 20               # IS adaptation steps on the unseen task (Sec. 5.3)
  e.aux_tasks = 5               # K auxiliary tasks retrieved by Eq. 3
  e.aux_steps = 20              # alternating GP fine-tuning steps on the auxiliary tasks
  e.aux_estimator = ""          # meta-gradient of Aux fine-tuning; "" -> meta.estimator
  e.aux_lr = -1.0               # GP fine-tuning learning rate; < 0 -> meta.outer_optimizer.lr
  e.num_test_tasks = -1         # -1 -> all test tasks
  e.augment_shots = False       # True: flip/crop/rotate the n support shots as in training;
                                # False: adapt on the raw pairs (queries are always raw)
  e.lpips_weights = ""          # Flax LPIPS checkpoint from data_prep/convert_lpips_weights.py
  e.grid_tasks = 4              # test tasks shown in the Fig. 3-style PNG grid
  return c
