"""Eager PyTorch reference of one meta-training step, for the speed comparison of the bench.

The same meta-step as :mod:`bil_jax.estimators` and :mod:`bil_jax.meta`, written in eager
PyTorch the way a functional-MAML user writes it: networks whose weights are dicts of
tensors, the tasks of the meta-batch in a Python loop, K alternating SGD steps (D, then G)
per task, outer Adam on the mean of the per-task meta-gradients. The networks are those of
:mod:`bil_jax.models` (pix2pix U-Net and PatchGAN, in :mod:`bil_jax.bench.torch_nets`),
the losses Eq. 4-7 without the perceptual term (BCE GAN loss + L1).

Gradients use ``torch.func`` (``grad``, ``vjp``), whose nesting levels keep the inner
gradients exactly those of :func:`bil_jax.gan.gan_step`: the G step differentiates L_G
through D's *input* with the updated D' held fixed. (The learn2learn/``higher`` idiom,
``torch.autograd.grad(create_graph=True)`` on one shared graph, cannot hold D' fixed there:
D' depends on G through the fake images of the D step, so its G step also differentiates
through D's update. That is another inner loop, ``SO != FO`` in the adapted weights
themselves, with a cost quadratic in K; see docs/benchmark.md.)
``second_order`` is one ``torch.func.vjp`` of the query losses through the K steps and two
pullbacks; ``first_order`` takes the query gradients at the adapted weights, with plain
``torch.autograd.grad`` (no graph across steps is needed there, and it is the faster form).

  python -m bil_jax.bench.torch_ref --size=32 --ngf=16
  python -m bil_jax.bench.torch_ref --size=64 --ngf=32 --estimators=second_order
  python -m bil_jax.bench.torch_ref --size=64 --ngf=32 --device=cuda

``--device=cuda`` runs it on the GPU (parameters, tasks and optimizer state there; each
timed step ends with ``torch.cuda.synchronize()``), as ``bil_jax.bench --torch`` does when
JAX's backend is a GPU.

Needs ``torch`` (``pip install torch``); it is not a dependency of bil_jax.
"""
import json
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

from bil_jax.bench import torch_nets


def _bce(logits, target):
  return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


class Reference:
  """The meta-step: ``step(tasks)`` with tasks a list of dicts of torch tensors."""

  def __init__(self, size=32, ngf=16, ndf=16, num_classes=8, inner_steps=5, inner_lr=1e-4,
               outer_lr=1e-4, lambda_l1=1.0, lambda_a=10.0, seed=0, device="cpu"):
    gen = torch.Generator().manual_seed(seed)  # drawn on the CPU: the same weights anywhere
    self.depth = torch_nets.unet_depth(size)
    self.num_classes = num_classes
    self.k = inner_steps
    self.lr = inner_lr
    self.l1, self.la = lambda_l1, lambda_a
    self.g = {
        k: v.to(device).requires_grad_()
        for k, v in torch_nets.init_generator(ngf, num_classes, self.depth, gen=gen).items()
    }
    self.d = {
        k: v.to(device).requires_grad_()
        for k, v in torch_nets.init_discriminator(ndf, num_classes + 3, gen=gen).items()
    }
    self.opt = torch.optim.Adam(
        list(self.g.values()) + list(self.d.values()), lr=outer_lr, betas=(0.5, 0.999))

  def _d_loss_from_logits(self, real_logits, fake_logits):
    return _bce(real_logits, 1.0) + _bce(fake_logits, 0.0)

  def _g_loss_from_logits(self, pairs, fake, fake_logits):
    return (self.l1 * (fake - pairs["image"]).abs().mean() + self.la * _bce(fake_logits, 1.0))

  def _d_loss(self, d, pairs, fake):
    s = pairs["onehot"]
    return self._d_loss_from_logits(torch_nets.discriminator(d, s, pairs["image"]),
                                    torch_nets.discriminator(d, s, fake))

  def _g_loss(self, d, pairs, fake):
    fake_logits = torch_nets.discriminator(d, pairs["onehot"], fake)
    return self._g_loss_from_logits(pairs, fake, fake_logits)

  def losses(self, params, pairs):
    """(L_G, L_D) at ``params`` = {'G', 'D'} on ``pairs`` (one G pass; D's logits on the
    fake images serve both losses, as in bil_jax.gan.gan_losses)."""
    s, d = pairs["onehot"], params["D"]
    fake = torch_nets.generator(params["G"], s, self.depth)
    fake_logits = torch_nets.discriminator(d, s, fake)
    return (self._g_loss_from_logits(pairs, fake, fake_logits),
            self._d_loss_from_logits(torch_nets.discriminator(d, s, pairs["image"]), fake_logits))

  def adapt(self, params, support):
    """K alternating SGD steps (D, then G) from ``params``: those of bil_jax.gan.gan_step.

    G runs once per step; its output feeds the D step and, through G's vjp, the G step,
    whose gradient holds the updated D fixed. Differentiable (``torch.func``) in ``params``.
    """
    g, d = params["G"], params["D"]
    for _ in range(self.k):
      fake, g_vjp = torch.func.vjp(
          lambda g_: torch_nets.generator(g_, support["onehot"], self.depth), g)
      gd = torch.func.grad(lambda d_: self._d_loss(d_, support, fake))(d)
      d = {k: v - self.lr * gd[k] for k, v in d.items()}
      (gg,) = g_vjp(torch.func.grad(lambda f: self._g_loss(d, support, f))(fake))
      g = {k: v - self.lr * gg[k] for k, v in g.items()}
    return {"G": g, "D": d}

  def meta_losses(self, params, task):
    """(L_G, L_D)(Adapt_K(params); T(te)): the functions second_order differentiates."""
    return self.losses(self.adapt(params, task["support"]), task["query"])

  def adapt_first_order(self, params, support):
    """:meth:`adapt` without the graph: plain ``torch.autograd.grad`` on detached weights,
    the fastest eager form of the same K steps (first_order needs no outer gradient)."""

    def leaves(p):
      return {k: v.detach().requires_grad_() for k, v in p.items()}

    g, d = leaves(params["G"]), leaves(params["D"])
    for _ in range(self.k):
      fake = torch_nets.generator(g, support["onehot"], self.depth)
      gd = torch.autograd.grad(self._d_loss(d, support, fake.detach()), list(d.values()))
      d = leaves({k: v - self.lr * gr for (k, v), gr in zip(d.items(), gd)})
      gg = torch.autograd.grad(self._g_loss(d, support, fake), list(g.values()))
      g = leaves({k: v - self.lr * gr for (k, v), gr in zip(g.items(), gg)})
    return {"G": g, "D": d}

  def meta_gradient(self, task, estimator="second_order"):
    """({'G': dL_G/dG, 'D': dL_D/dD}, L_G after adaptation) for one task."""
    params = {"G": self.g, "D": self.d}
    if estimator == "second_order":
      (lg, _), pullback = torch.func.vjp(lambda p: self.meta_losses(p, task), params)
      one, zero = torch.ones_like(lg), torch.zeros_like(lg)
      (dg,) = pullback((one, zero))
      (dd,) = pullback((zero, one))
      return {"G": dg["G"], "D": dd["D"]}, lg.detach()
    if estimator == "first_order":
      adapted = self.adapt_first_order(params, task["support"])
      lg, ld = self.losses(adapted, task["query"])
      dg = torch.autograd.grad(lg, list(adapted["G"].values()), retain_graph=True)
      dd = torch.autograd.grad(ld, list(adapted["D"].values()))
      return ({"G": dict(zip(adapted["G"], dg)), "D": dict(zip(adapted["D"], dd))}, lg.detach())
    raise ValueError(f"estimator={estimator!r} is not one of ('second_order', 'first_order')")

  def step(self, tasks, estimator="second_order"):
    """One meta-step over ``tasks`` (a Python loop); returns the mean query L_G."""
    acc = {k: torch.zeros_like(v) for k, v in list(self.g.items()) + list(self.d.items())}
    total = 0.0
    for task in tasks:
      grads, lg = self.meta_gradient(task, estimator)
      for net in ("G", "D"):
        for k, v in grads[net].items():
          acc[k] += v / len(tasks)
      with torch.no_grad():  # the 'before' query losses the JAX estimators also report
        self.losses({"G": self.g, "D": self.d}, task["query"])
      total += float(lg) / len(tasks)
    for k, v in list(self.g.items()) + list(self.d.items()):
      v.grad = acc[k]
    self.opt.step()
    return total


def torch_params_from_jax(params) -> dict:
  """bil_jax {'G', 'D'} parameters (Flax, HWIO kernels) -> this module's {'G', 'D'} dicts.

  Convolutions: [kh,kw,I,O] -> [O,I,kh,kw]. Transposed convolutions (``convs.UpConv``,
  which equals PyTorch's ConvTranspose2d with the kernel flipped): [4,4,I,O] ->
  [I,O,4,4] flipped. Norm scale/bias and biases are copied. Arrays keep their dtype.
  """

  def t(a):
    return torch.from_numpy(np.array(a))

  g, d = {}, {}
  for name, sub in params["G"].items():
    kind, i = name.rsplit("_", 1)
    if kind == "down":
      g[f"down_{i}.w"] = t(np.asarray(sub["kernel"]).transpose(3, 2, 0, 1))
    elif kind == "up":
      g[f"up_{i}.w"] = t(np.asarray(sub["kernel"]).transpose(2, 3, 0, 1)[:, :, ::-1, ::-1])
    else:  # down_norm_i / up_norm_i
      g[f"{kind}_{i}.s"], g[f"{kind}_{i}.b"] = t(sub["scale"]), t(sub["bias"])
      continue
    if "bias" in sub:
      g[f"{kind}_{i}.b"] = t(sub["bias"])
  for name, sub in params["D"].items():
    if name.startswith("norm_"):
      d[f"{name}.s"], d[f"{name}.b"] = t(sub["scale"]), t(sub["bias"])
      continue
    d[f"{name}.w"] = t(np.asarray(sub["kernel"]).transpose(3, 2, 0, 1))
    if "bias" in sub:
      d[f"{name}.b"] = t(sub["bias"])
  return {"G": g, "D": d}


def random_tasks(meta_batch, shots, queries, size, num_classes, seed=0, device="cpu"):
  """``meta_batch`` tasks of random label maps and images on ``device``: each
  {'support', 'query'} of {'onehot': [n,C,H,W], 'image': [n,3,H,W]}."""
  rng = np.random.default_rng(seed)

  def pairs(n):
    m = torch.from_numpy(rng.integers(0, num_classes, (n, size, size)))
    return {
        "onehot":
            F.one_hot(m, num_classes).permute(0, 3, 1, 2).float().contiguous().to(device), "image":
                torch.from_numpy(rng.uniform(-1, 1,
                                             (n, 3, size, size)).astype(np.float32)).to(device)
    }

  return [{"support": pairs(shots), "query": pairs(queries)} for _ in range(meta_batch)]


def count_flops(ref, tasks, estimator):
  """FLOPs of one meta-step by ``torch.utils.flop_counter`` (None if unavailable)."""
  try:
    from torch.utils.flop_counter import FlopCounterMode
  except ImportError:
    return None
  with FlopCounterMode(display=False) as counter:
    ref.step(tasks, estimator)
  return int(counter.get_total_flops())


def measure(size=32, ngf=16, ndf=None, num_classes=8, meta_batch=5, shots=5, queries=5,
            inner_steps=5, estimators=("second_order", "first_order"), repeats=3, threads=0,
            flops=True, seed=0, device="cpu"):
  """Times the reference meta-step on ``device`` ('cpu' or 'cuda'); returns a list of
  records (one per estimator)."""
  if threads:
    torch.set_num_threads(threads)
  cuda = device.startswith("cuda")
  if cuda and not torch.cuda.is_available():
    raise SystemExit(
        f"bil_jax.bench.torch_ref: --device {device}: torch {torch.__version__} sees no GPU")
  sync = torch.cuda.synchronize if cuda else (lambda: None)
  tasks = random_tasks(meta_batch, shots, queries, size, num_classes, seed, device)
  out = []
  for est in estimators:
    ref = Reference(size, ngf, ndf or ngf, num_classes, inner_steps, seed=seed, device=device)
    ref.step(tasks, est)  # warm-up
    sync()
    times = []
    for _ in range(repeats):
      t0 = time.perf_counter()
      loss = ref.step(tasks, est)
      sync()
      times.append(time.perf_counter() - t0)
    step = statistics.median(times)
    n_flops = count_flops(ref, tasks, est) if flops else None
    out.append({
        "model": "pix2pix", "implementation": "pytorch_eager", "estimator": est, "remat": False,
        "inner_steps": inner_steps, "meta_batch": meta_batch, "image_size": size, "ngf": ngf,
        "ndf": ndf or ngf, "inner_optimizer": "sgd", "step_time_s": step, "step_times_s": times,
        "tasks_per_s": meta_batch / step, "flops": n_flops, "flops_per_s":
            (n_flops / step) if n_flops else None, "loss": loss, "torch_version": torch.__version__,
        "device": device, "torch_threads": torch.get_num_threads()
    })
  return out


def _define_flags() -> None:
  from absl import flags  # pylint: disable=import-outside-toplevel
  flags.DEFINE_integer("size", 32, "Image size (square).")
  flags.DEFINE_integer("ngf", 16, "Generator width.")
  flags.DEFINE_integer("ndf", 0, "Discriminator width (0: ngf).")
  flags.DEFINE_integer("num_classes", 8, "Classes of the maps.")
  flags.DEFINE_integer("meta_batch", 5, "Tasks per meta-batch M.")
  flags.DEFINE_integer("shots", 5, "Support pairs per task.")
  flags.DEFINE_integer("queries", 5, "Query pairs per task.")
  flags.DEFINE_integer("inner_steps", 5, "Inner steps K.")
  flags.DEFINE_string("estimators", "second_order,first_order", "Estimators to time.")
  flags.DEFINE_integer("repeats", 3, "Timed steps (median).")
  flags.DEFINE_integer("threads", 0, "Torch threads (0: torch's default).")
  flags.DEFINE_bool("flops", True, "Count FLOPs with torch's flop counter.")
  flags.DEFINE_string("json", "", "Also write the records to this file.")
  flags.DEFINE_string("device", "cpu", "cpu or cuda[:i].")


def _main(argv):
  from absl import flags  # pylint: disable=import-outside-toplevel
  if len(argv) > 1:
    raise SystemExit(f"error: unexpected arguments: {argv[1:]}")
  a = flags.FLAGS
  from bil_jax.bench import estimate  # pylint: disable=import-outside-toplevel
  ests = a.estimators.split(",")
  seconds = sum(
      (a.repeats + 2) * 2 * estimate.gflop(a.size, a.size, a.ngf, a.shots, a.queries, False, e,
                                           a.inner_steps, a.meta_batch) * 1e9 / estimate.CPU_FLOPS
      for e in ests)
  print(
      f"expected: {estimate.say(seconds)} on a 2-core CPU ({len(ests)} estimators x "
      f"{a.repeats + 2} steps; rough)", flush=True)
  recs = measure(a.size, a.ngf, a.ndf or a.ngf,
                 a.num_classes, a.meta_batch, a.shots, a.queries, a.inner_steps,
                 tuple(a.estimators.split(",")), a.repeats, a.threads, a.flops, device=a.device)
  for r in recs:
    fl = f"{r['flops'] / 1e9:.1f} GFLOP" if r["flops"] else "n/a"
    print(f"pytorch eager ({a.device}) {r['estimator']:>12s} {a.size}x{a.size} ngf {a.ngf} "
          f"K={a.inner_steps} M={a.meta_batch}: {r['step_time_s']:.3f} s/step "
          f"(median of {a.repeats}), {fl}")
  if a.json:
    with open(a.json, "w") as f:
      json.dump(recs, f, indent=1)
    print(f"wrote: {a.json}")


def main():
  """``python -m bil_jax.bench.torch_ref``: flags as in the module docstring."""
  from absl import app  # pylint: disable=import-outside-toplevel
  _define_flags()
  app.run(_main)


if __name__ == "__main__":
  main()
