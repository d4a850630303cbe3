"""Properties of the generators, the PatchGAN discriminator and the norm layer.

Shapes are checked with ``jax.eval_shape`` (tracing only, no compilation). Tests that need
values initialise with ``impl='rbg'`` keys: XLA:CPU compiles threefry-based initialisers of a
U-Net in ~20 s, rbg in ~2 s, and the models do not depend on the key implementation.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bil_jax import config_lib
from bil_jax import models
from bil_jax.models import convs
from bil_jax.models import layers
from bil_jax.models import patchgan
from bil_jax.models import pix2pix

C = 5  # classes of the one-hot structure maps


def key(seed):
  return jax.random.key(seed, impl="rbg")


def model_cfg(name="pix2pix", ngf=4, ndf=4, norm="instance", num_downs=-1, dropout=0.5, d_layers=3):
  cfg = config_lib.base_config().model
  cfg.name, cfg.ngf, cfg.ndf, cfg.norm = name, ngf, ndf, norm
  cfg.num_downs, cfg.dropout, cfg.d_layers = num_downs, dropout, d_layers
  return cfg


def inputs(cfg, hw, batch=2, seed=0):
  """Random generator input x, one-hot structure s and image y for ``hw`` (numpy)."""
  rs = np.random.RandomState(seed)
  s = np.eye(C, dtype=np.float32)[rs.randint(0, C, (batch,) + hw)]
  y = rs.uniform(-1.0, 1.0, (batch,) + hw + (3,)).astype(np.float32)
  if cfg.name == "pg2":
    ref = rs.uniform(-1.0, 1.0, (batch,) + hw + (3,)).astype(np.float32)
    x = np.concatenate([ref, s], axis=-1)
  else:
    x = s
  assert x.shape[-1] == models.generator_in_channels(cfg, C)
  return x, s, y


def init_generator(g, x):
  return g.init({"params": key(0), "dropout": key(1)}, x, train=True)


def first_line_only(excinfo):
  return "\n" not in str(excinfo.value)


# ------------------------------------------------------------------------------- shapes


def test_generator_in_channels_puts_reference_first():
  assert models.generator_in_channels(model_cfg("pix2pix"), C) == C
  assert models.generator_in_channels(model_cfg("pg2"), C) == C + 3


@pytest.mark.parametrize("name,hw,depth", [("pix2pix", (32, 32), 5), ("pix2pix", (64, 64), 6),
                                           ("pix2pix", (128, 256), 7), ("pg2", (32, 32), 3),
                                           ("pg2", (64, 64), 4), ("pg2", (128, 256), 5)])
def test_generator_maps_input_to_image_of_same_size(name, hw, depth):
  cfg = model_cfg(name, ngf=8)
  g = models.build_generator(cfg, C, hw)
  assert g.depth == depth
  x, _, _ = inputs(cfg, hw)
  variables = jax.eval_shape(lambda: init_generator(g, x))
  assert set(variables) == {"params"}
  out = jax.eval_shape(lambda v: g.apply(v, x, train=True, rngs={"dropout": key(2)}), variables)
  assert out.shape == (2,) + hw + (3,) and out.dtype == jnp.float32


@pytest.mark.parametrize("in_hw", [(1, 1), (1, 2), (3, 5), (16, 8)])
def test_transposed_conv_exactly_doubles_the_size(in_hw):
  x = jnp.zeros((1,) + in_hw + (2,))
  up = convs.up_conv(3)
  out = jax.eval_shape(lambda: up.apply(up.init(key(0), x), x))
  assert out.shape == (1, 2 * in_hw[0], 2 * in_hw[1], 3)


@pytest.mark.parametrize("hw,n_layers,out_hw", [((32, 32), 3, (2, 2)), ((128, 256), 3, (14, 30)),
                                                ((64, 64), 2, (14, 14)), ((32, 32), 1, (14, 14))])
def test_discriminator_patch_logits_shape(hw, n_layers, out_hw):
  cfg = model_cfg(d_layers=n_layers)
  d = models.build_discriminator(cfg, C)
  _, s, y = inputs(cfg, hw)
  variables = jax.eval_shape(lambda: d.init(key(0), s, y))
  assert set(variables) == {"params"}
  out = jax.eval_shape(lambda v: d.apply(v, s, y), variables)
  assert out.shape == (2,) + out_hw + (1,)
  assert out_hw == tuple(patchgan.patchgan_output_size(n, n_layers) for n in hw)


def test_pix2pix_widths_match_the_original_unet_256():
  """depth 8: encoder ngf, 2, 4, 8, 8, 8, 8, 8 x ngf; three dropout blocks (num_downs - 5)."""
  ngf = 4
  g = pix2pix.UnetGenerator(depth=8, ngf=ngf)
  x = jnp.zeros((1, 256, 256, 3))
  p = jax.eval_shape(lambda: init_generator(g, x))["params"]
  widths = [p[f"down_{i}"]["kernel"].shape[-1] // ngf for i in range(8)]
  assert widths == [1, 2, 4, 8, 8, 8, 8, 8]
  assert [p[f"up_{i}"]["kernel"].shape[-2] // ngf for i in range(8)] == [2, 4, 8, 16, 16, 16, 16, 8]
  assert "bias" not in p["down_1"] and "bias" in p["down_7"] and "down_norm_7" not in p
  assert [i for i in range(8) if pix2pix.has_dropout(i, 8)] == [4, 5, 6]


# --------------------------------------------------------------------------- size errors


@pytest.mark.parametrize("name", ["pix2pix", "pg2"])
@pytest.mark.parametrize("hw,num_downs", [((48, 48), -1), ((100, 100), -1), ((100, 100), 3),
                                          ((64, 100), -1)])
def test_bad_image_size_raises_one_line_naming_size_and_key(name, hw, num_downs):
  with pytest.raises(ValueError) as excinfo:
    models.build_generator(model_cfg(name, num_downs=num_downs), C, hw)
  msg = str(excinfo.value)
  assert f"{hw[0]}x{hw[1]}" in msg and "model.num_downs" in msg
  assert first_line_only(excinfo)


def test_explicit_num_downs_allows_other_sizes():
  cfg = model_cfg("pix2pix", num_downs=2)
  g = models.build_generator(cfg, C, (100, 100))
  x, _, _ = inputs(cfg, (100, 100), batch=1)
  out = jax.eval_shape(lambda: g.apply(init_generator(g, x), x, train=False))
  assert out.shape == (1, 100, 100, 3)


def test_pg2_bottom_smaller_than_2x2_is_rejected():
  with pytest.raises(ValueError, match="32x32.*model.num_downs"):
    models.build_generator(model_cfg("pg2", num_downs=5), C, (32, 32))


def test_wrong_input_channels_raise():
  cfg = model_cfg("pg2")
  g = models.build_generator(cfg, C, (32, 32))
  with pytest.raises(ValueError, match="channels"):
    jax.eval_shape(lambda: init_generator(g, jnp.zeros((1, 32, 32, C))))


# -------------------------------------------------------------------------- norm layers


@pytest.mark.parametrize("name", ["pix2pix", "pg2"])
@pytest.mark.parametrize("norm", ["instance", "batch"])
def test_no_mutable_collections(name, norm):
  """Only 'params' exists, and applying with everything else mutable mutates nothing."""
  cfg = model_cfg(name, norm=norm)
  hw = (32, 32)
  g, d = models.build_generator(cfg, C, hw), models.build_discriminator(cfg, C)
  x, s, y = inputs(cfg, hw)
  gv = jax.eval_shape(lambda: init_generator(g, x))
  dv = jax.eval_shape(lambda: d.init(key(0), s, y))
  assert set(gv) == {"params"} and set(dv) == {"params"}
  others = jax.eval_shape(
      lambda v: g.apply(v, x, train=True, rngs={"dropout": key(1)}, mutable=True), gv)[1]
  assert set(others) == {"params"}  # mutable=True returns every collection: params only
  _, others = jax.eval_shape(lambda v: d.apply(v, s, y, mutable=["batch_stats", "intermediates"]),
                             dv)
  assert not others


def test_instance_norm_is_per_sample_and_batch_norm_uses_the_batch():
  x = np.random.RandomState(0).randn(3, 4, 5, 2).astype(np.float32) * 3.0 + 1.0
  x2 = x.copy()
  x2[1:] *= 10.0  # change the other samples only
  for kind, axes in (("instance", (1, 2)), ("batch", (0, 1, 2))):
    norm = layers.Norm(kind)
    v = norm.init(key(0), x)
    assert set(v) == {"params"} and set(v["params"]) == {"scale", "bias"}
    out = norm.apply(v, x)
    np.testing.assert_allclose(out.mean(axis=axes), 0.0, atol=1e-5)
    np.testing.assert_allclose(out.var(axis=axes), 1.0, atol=1e-3)
    same = np.allclose(norm.apply(v, x2)[0], out[0], atol=1e-5)
    assert same == (kind == "instance")
  with pytest.raises(ValueError, match="model.norm"):
    layers.Norm("group").init(key(0), x)


# ----------------------------------------------------------------- values and gradients


def _grads(cfg, hw):
  g, d = models.build_generator(cfg, C, hw), models.build_discriminator(cfg, C)
  x, s, y = inputs(cfg, hw)
  gp = jax.jit(lambda: init_generator(g, x))()["params"]
  dp = jax.jit(lambda: d.init(key(3), s, y))()["params"]

  @jax.jit
  def loss_and_grads(gp, dp):

    def loss(gp, dp):
      fake = g.apply({"params": gp}, x, train=True, rngs={"dropout": key(4)})
      return jnp.mean((fake - y) ** 2) + jnp.mean(d.apply({"params": dp}, s, fake) ** 2), fake

    return jax.grad(loss, argnums=(0, 1), has_aux=True)(gp, dp)

  return loss_and_grads(gp, dp)


@pytest.mark.parametrize("name,hw,norm,d_layers", [("pix2pix", (64, 64), "instance", 3),
                                                   ("pg2", (16, 16), "batch", 2)])
def test_gradients_reach_every_parameter(name, hw, norm, d_layers):
  """A simple loss through G (train mode, dropout on) and D reaches every leaf of both."""
  (g_grads, d_grads), out = _grads(model_cfg(name, norm=norm, d_layers=d_layers), hw)
  for tree in (g_grads, d_grads):
    dead = [
        jax.tree_util.keystr(path)
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
        if not np.any(np.asarray(leaf) != 0)
    ]
    assert not dead, f"zero gradient for {dead}"
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(tree))
  assert out.shape == (2,) + hw + (3,)
  assert np.all(np.abs(out) < 1.0)


@pytest.fixture(scope="module")
def pix2pix_64():
  """pix2pix at 64x64 (depth 6: one dropout block), its params and input."""
  cfg = model_cfg("pix2pix", dropout=0.5)
  g = models.build_generator(cfg, C, (64, 64))
  x, _, _ = inputs(cfg, (64, 64))
  params = jax.jit(lambda: init_generator(g, x))()["params"]
  return g, params, x


def test_dropout_follows_the_rng_when_training_and_is_off_at_eval(pix2pix_64):
  g, params, x = pix2pix_64
  train = jax.jit(lambda k: g.apply({"params": params}, x, train=True, rngs={"dropout": k}))
  a1, a2, b = train(key(7)), train(key(7)), train(key(8))
  np.testing.assert_array_equal(a1, a2)
  assert not np.allclose(a1, b)
  evaluate = jax.jit(lambda: g.apply({"params": params}, x, train=False))  # no rng needed
  e1, e2 = evaluate(), evaluate()
  np.testing.assert_array_equal(e1, e2)
  assert not np.allclose(e1, a1)


# ------------------------------------------------------------- parity with the original


def _torch_unet(torch, depth, ngf, in_c):
  """pytorch-CycleGAN-and-pix2pix UnetGenerator (instance norm, bias=True), by hand."""
  nn = torch.nn

  class Block(nn.Module):

    def __init__(self, outer, inner, in_c=None, sub=None, outermost=False, innermost=False):
      super().__init__()
      self.outermost = outermost
      in_c = outer if in_c is None else in_c
      down = nn.Conv2d(in_c, inner, 4, 2, 1)
      up_in = inner if innermost else inner * 2
      up = nn.ConvTranspose2d(up_in, outer, 4, 2, 1)
      if outermost:
        seq = [down, sub, nn.ReLU(), up, nn.Tanh()]
      elif innermost:
        seq = [nn.LeakyReLU(0.2), down, nn.ReLU(), up, nn.InstanceNorm2d(outer)]
      else:
        seq = [
            nn.LeakyReLU(0.2), down,
            nn.InstanceNorm2d(inner), sub,
            nn.ReLU(), up,
            nn.InstanceNorm2d(outer)
        ]
      self.model = nn.Sequential(*seq)

    def forward(self, x):
      return self.model(x) if self.outermost else torch.cat([x, self.model(x)], 1)

  block = Block(ngf * 8, ngf * 8, innermost=True)
  for _ in range(depth - 5):
    block = Block(ngf * 8, ngf * 8, sub=block)
  block = Block(ngf * 4, ngf * 8, sub=block)
  block = Block(ngf * 2, ngf * 4, sub=block)
  block = Block(ngf, ngf * 2, sub=block)
  return Block(3, ngf, in_c=in_c, sub=block, outermost=True)


def test_pix2pix_equals_the_pytorch_unet():
  """Same weights -> same output as the original UnetGenerator (depth 5, eval mode).

  Conv biases the Flax model drops (convs followed by a norm) are random in the reference:
  the norm cancels them. ConvTranspose2d weights [in, out, kh, kw] map to Flax
  [kh, kw, in, out] flipped spatially.
  """
  torch = pytest.importorskip("torch")
  depth, ngf = 5, 4
  torch.manual_seed(0)
  ref = _torch_unet(torch, depth, ngf, C).eval()
  for m in ref.modules():
    if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
      torch.nn.init.normal_(m.bias, 0.0, 0.1)
  blocks, m = [], ref
  for _ in range(depth):
    blocks.append(m)
    subs = [s for s in m.model if s.__class__.__name__ == "Block"]
    m = subs[0] if subs else None
  params = {}
  for i, b in enumerate(blocks):
    down, up = [s for s in b.model if isinstance(s, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    params[f"down_{i}"] = {"kernel": down.weight.detach().numpy().transpose(2, 3, 1, 0)}
    if i in (0, depth - 1):
      params[f"down_{i}"]["bias"] = down.bias.detach().numpy()
    params[f"up_{i}"] = {
        "kernel": up.weight.detach().numpy()[:, :, ::-1, ::-1].transpose(2, 3, 0, 1)
    }
    if i == 0:
      params["up_0"]["bias"] = up.bias.detach().numpy()
  g = pix2pix.UnetGenerator(depth=depth, ngf=ngf, norm="instance")
  x = np.random.RandomState(0).randn(2, 32, 32, C).astype(np.float32)
  init = jax.eval_shape(lambda: init_generator(g, x))["params"]
  for name, sub in init.items():  # norm scale 1, bias 0 == InstanceNorm2d(affine=False)
    if name not in params:
      params[name] = {"scale": np.ones(sub["scale"].shape), "bias": np.zeros(sub["bias"].shape)}
  assert jax.tree.map(np.shape, params) == jax.tree.map(lambda a: a.shape, init)
  out = jax.jit(lambda p: g.apply({"params": p}, x, train=False))(params)
  with torch.no_grad():
    expected = ref(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy().transpose(0, 2, 3, 1)
  np.testing.assert_allclose(out, expected, atol=1e-5)


def test_patchgan_equals_the_pytorch_nlayer_discriminator_with_batch_norm():
  torch = pytest.importorskip("torch")
  nn = torch.nn
  ndf, n_layers = 4, 3
  torch.manual_seed(1)
  seq = [nn.Conv2d(C + 3, ndf, 4, 2, 1), nn.LeakyReLU(0.2)]
  for i in range(1, n_layers + 1):
    seq += [
        nn.Conv2d(ndf * min(2 ** (i - 1), 8), ndf * min(2 ** i, 8), 4, 2 if i < n_layers else 1, 1,
                  bias=False),
        nn.BatchNorm2d(ndf * min(2 ** i, 8)),
        nn.LeakyReLU(0.2)
    ]
  seq += [nn.Conv2d(ndf * min(2 ** n_layers, 8), 1, 4, 1, 1)]
  ref = nn.Sequential(*seq).train()  # train mode: current-batch statistics
  convs = [m for m in ref if isinstance(m, nn.Conv2d)]
  bns = [m for m in ref if isinstance(m, nn.BatchNorm2d)]
  for bn in bns:
    nn.init.normal_(bn.weight, 1.0, 0.1)
    nn.init.normal_(bn.bias, 0.0, 0.1)
  t = lambda a: a.detach().numpy()
  names = ["conv_0"] + [f"conv_{i}" for i in range(1, n_layers + 1)] + ["logits"]
  params = {}
  for name, c in zip(names, convs):
    params[name] = {"kernel": t(c.weight).transpose(2, 3, 1, 0)}
    if c.bias is not None:
      params[name]["bias"] = t(c.bias)
  for i, bn in enumerate(bns, start=1):
    params[f"norm_{i}"] = {"scale": t(bn.weight), "bias": t(bn.bias)}
  d = patchgan.PatchGAN(num_classes=C, ndf=ndf, n_layers=n_layers, norm="batch")
  cfg = model_cfg()
  _, s, y = inputs(cfg, (32, 32), batch=3)
  out = jax.jit(lambda p: d.apply({"params": p}, s, y))(params)
  with torch.no_grad():
    xin = np.concatenate([np.asarray(s), np.asarray(y)], -1).transpose(0, 3, 1, 2)
    expected = ref(torch.from_numpy(xin)).numpy().transpose(0, 2, 3, 1)
  np.testing.assert_allclose(out, expected, atol=1e-4)
