"""L_P (Eq. 6) as LPIPS-VGG v0.1: parity with PyTorch, the converter, the GAN step and the
second-order meta-gradient through it.

The PyTorch reference (tests/lpips_reference.py) is the official lpips 0.1.4 forward
written from torch primitives, on random weights that go through the converter.
"""
import functools
import glob
import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

import tiny
from bil_jax import builders, config_lib, estimators, gan, losses
from bil_jax.models import lpips as lpips_lib
from bil_jax.models import vgg
from data_prep import convert_lpips_weights, convert_torch_weights

torch = pytest.importorskip("torch")
import lpips_reference  # pylint: disable=g-import-not-at-top,wrong-import-position

HW = 16  # the smallest size at which relu5_3 is not empty (1x1)
TINY_WIDTHS = (3, 3, 3, 3, 3)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_HIGHEST = jax.lax.Precision.HIGHEST  # parity holds on accelerators too (no TF32)
_lpips_vgg = jax.jit(
    lambda v, a, b: lpips_lib.LPIPS(net="vgg", precision=_HIGHEST).apply(v, a, b, per_layer=True))
_exact_loss = jax.jit(functools.partial(lpips_lib.lpips_loss, net="vgg", precision=_HIGHEST))
_loss = jax.jit(losses.lpips_vgg_loss)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """(torch model, converted variables, path of the CLI-converted file), VGG16 full size."""
  model = lpips_reference.random_lpips("vgg", seed=0)
  trunk, lin = model.state_dicts()
  trunk["classifier.0.weight"] = torch.zeros(8, 4)  # a torchvision file has these
  d = tmp_path_factory.mktemp("lpips_vgg")
  torch.save(trunk, d / "vgg16-397923af.pth")
  torch.save(lin, d / "vgg.pth")
  out = str(d / "lpips_vgg.msgpack")
  assert convert_lpips_weights.main([
      "--net=vgg", f"--vgg16={d / 'vgg16-397923af.pth'}", f"--lin={d / 'vgg.pth'}", f"--out={out}"
  ]) == 0
  variables = jax.tree.map(np.asarray, convert_lpips_weights.convert_vgg(trunk, lin))
  return model, variables, out


def _images(seed, shape):
  """(a, b): b[0] a perturbed copy of a[0], b[1:] unrelated images."""
  rng = np.random.default_rng(seed)
  a = rng.uniform(-1, 1, shape).astype(np.float32)
  b = rng.uniform(-1, 1, shape).astype(np.float32)
  b[0] = np.clip(a[0] + 0.1 * rng.standard_normal(a[0].shape), -1, 1)
  return a, b


@pytest.mark.parametrize("shape", [(3, 32, 32, 3), (2, 37, 45, 3)])
def test_matches_torch_reference(reference, shape):
  """Distances, per-layer terms and the loss equal PyTorch's to 1e-5 (odd sizes: floor
  semantics of the max-pools)."""
  model, variables, _ = reference
  a, b = _images(shape[1], shape)
  want, want_layers = lpips_reference.torch_lpips(model, a, b, per_layer=True)
  got, got_layers = _lpips_vgg(variables, a, b)
  assert np.all(want > 0)
  np.testing.assert_allclose(np.asarray(got), want, rtol=0, atol=1e-5)
  for g, w in zip(got_layers, want_layers, strict=True):
    np.testing.assert_allclose(np.asarray(g), w, rtol=0, atol=1e-5)
  np.testing.assert_allclose(float(_exact_loss(variables, a, b)), want.mean(), rtol=0, atol=1e-5)


def test_cli_file_loads_for_both_kinds(reference):
  _, variables, path = reference
  loaded = losses.load_perceptual_weights("lpips_vgg", path)
  jax.tree.map(np.testing.assert_array_equal, loaded, variables)
  trunk = losses.load_perceptual_weights("vgg_mse", path)  # its trunk serves vgg_mse too
  jax.tree.map(np.testing.assert_array_equal, trunk, variables["params"]["trunk"])


def test_param_tree_matches_flax_init(reference):
  _, variables, _ = reference
  x = jax.ShapeDtypeStruct((1, 32, 32, 3), np.float32)
  init = jax.eval_shape(lpips_lib.LPIPS(net="vgg").init, jax.random.PRNGKey(0), x, x)
  assert jax.tree.map(np.shape, init) == jax.tree.map(np.shape, variables)


def test_weight_file_errors_are_one_line_and_say_what_to_run(reference, tmp_path):
  _, variables, _ = reference
  missing = str(tmp_path / "nope.msgpack")
  with pytest.raises(FileNotFoundError) as e:
    losses.load_perceptual_weights("lpips_vgg", missing)
  msg = str(e.value)
  assert "\n" not in msg and missing in msg and "loss.vgg_weights" in msg
  assert "convert_lpips_weights --net=vgg" in msg and "vgg.pth" in msg
  with pytest.raises(ValueError, match=r"loss\.vgg_weights is empty.*--net=vgg"):
    losses.load_perceptual_weights("lpips_vgg", "")
  # A plain VGG16 file (no heads) is the wrong kind for lpips_vgg.
  vgg_only = str(tmp_path / "vgg16.msgpack")
  convert_torch_weights.write_params_atomically(variables["params"]["trunk"], vgg_only)
  with pytest.raises(ValueError) as e:
    losses.load_perceptual_weights("lpips_vgg", vgg_only)
  assert "\n" not in str(e.value) and vgg_only in str(e.value) and "--net=vgg" in str(e.value)
  with pytest.raises(ValueError, match="loss.perceptual='lpips'"):
    losses.load_perceptual_weights("lpips", vgg_only)


def test_converter_errors_name_the_culprit(reference, tmp_path, capsys):
  model, _, _ = reference
  trunk, lin = model.state_dicts()
  del lin["lin4.model.1.weight"]
  with pytest.raises(KeyError, match="lin4.model.1.weight"):
    convert_lpips_weights.convert_vgg(trunk, lin)
  assert convert_lpips_weights.main(["--net=vgg", "--lin=x.pth", f"--out={tmp_path / 'o'}"]) == 1
  err = capsys.readouterr().err.strip()
  assert "\n" not in err and "--vgg16" in err


def _tiny_variables(seed=0, widths=TINY_WIDTHS, dtype=jnp.float32):
  """Random LPIPS-VGG variables with narrow blocks: random biases, lin heads >= 0."""
  x = jnp.zeros((1, HW, HW, 3))
  v = lpips_lib.LPIPS(net="vgg", widths=widths).init(jax.random.PRNGKey(seed), x, x)
  leaves, treedef = jax.tree.flatten_with_path(v)
  keys = jax.random.split(jax.random.PRNGKey(seed + 1), len(leaves))
  out = []
  for (path, leaf), k in zip(leaves, keys):
    name = jax.tree_util.keystr(path)
    if "bias" in name:
      leaf = 0.1 * jax.random.normal(k, leaf.shape)
    elif "lin" in name:
      leaf = jnp.abs(leaf)
    out.append(leaf.astype(dtype))
  return jax.tree.unflatten(treedef, out)


_tiny_lpips = jax.jit(
    lambda v, a, b, precision=None: lpips_lib.LPIPS(net="vgg", widths=TINY_WIDTHS, precision=
                                                    precision).apply(v, a, b), static_argnums=3)


def test_loss_equals_module_and_differentiates_fake_only():
  v = _tiny_variables()
  a, b = _images(5, (2, HW, HW, 3))
  np.testing.assert_allclose(float(_exact_loss(v, a, b)),
                             float(jnp.mean(_tiny_lpips(v, a, b, _HIGHEST))), rtol=1e-6)
  assert float(_loss(v, a, a)) == 0.0
  grad = jax.jit(jax.grad(losses.lpips_vgg_loss, argnums=(1, 2)))
  g_fake, g_real = grad(v, a, b)
  assert np.all(np.isfinite(g_fake)) and np.any(g_fake) and not np.any(g_real)
  black = -np.ones_like(b)  # all-zero trunk features somewhere: still finite
  assert np.all(np.isfinite(grad(v, a, black)[0]))


def _to_torch(variables, widths=TINY_WIDTHS):
  """A TorchLPIPS holding the (narrow) Flax LPIPS-VGG ``variables``."""
  model = lpips_reference.TorchLPIPS("vgg", widths).eval()
  p = jax.tree.map(np.asarray, variables["params"])
  state = {f"lins.{i}.1.weight": p[f"lin{i}"]["kernel"].transpose(3, 2, 0, 1) for i in range(5)}
  for name in vgg.CONV_NAMES:
    state[f"features.{vgg.TORCH_INDEX[name]}.weight"] = p["trunk"][name]["kernel"].transpose(
        3, 2, 0, 1)
    state[f"features.{vgg.TORCH_INDEX[name]}.bias"] = p["trunk"][name]["bias"]
  full = model.state_dict()  # the scaling layer's buffers
  full.update({k: torch.tensor(v) for k, v in state.items()})
  model.load_state_dict(full)
  return model


def test_dead_pixels_match_torch():
  """Where one image's features are all zero at a pixel (1/norm = 1e10) the normalised
  difference has no cancellation error: narrow trunk, black vs random images."""
  v = _tiny_variables()
  a, _ = _images(6, (2, HW, HW, 3))
  black = -np.ones_like(a)
  feats = jax.jit(lambda p, x: lpips_lib.make_trunk("vgg", TINY_WIDTHS).apply(
      {"params": p}, lpips_lib.scaling_layer(x)))(v["params"]["trunk"], black)
  assert any(np.any(np.all(np.asarray(f) == 0, axis=-1)) for f in feats)  # dead pixels
  model = _to_torch(v)
  for x, y in ((a, black), (black, a)):
    want = lpips_reference.torch_lpips(model, x, y)
    np.testing.assert_allclose(np.asarray(_tiny_lpips(v, x, y, _HIGHEST)), want, rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(float(_exact_loss(v, x, y)), want.mean(), rtol=1e-5)


def _pairs(rng, n, dtype=np.float32):
  return {
      "map": rng.integers(0, tiny.C, (n, HW, HW)).astype(np.int32),
      "image": rng.uniform(-1, 1, (n, HW, HW, 3)).astype(dtype),
      "ref": rng.uniform(-1, 1, (n, HW, HW, 3)).astype(dtype)
  }


def _spec(kind, lambda_b=2.0):
  return gan.GanSpec(tiny.TinyG(), tiny.TinyD(), num_classes=tiny.C, uses_reference=False,
                     lambda_a=0.5, lambda_b=lambda_b, perceptual=kind)


@pytest.mark.parametrize("kind", ["lpips_vgg", "vgg_mse"])
def test_gan_step_perceptual_term_is_positive_and_has_a_gradient(kind):
  v = _tiny_variables()
  frozen = v if kind == "lpips_vgg" else v["params"]["trunk"]
  sp = _spec(kind)
  params = tiny.init_params(sp, seed=0)
  pairs = _pairs(np.random.default_rng(0), 2)
  opt = optax.adam(1e-3)
  rng = jax.random.PRNGKey(0)
  new, _, m = jax.jit(functools.partial(gan.gan_step, sp, opt))(params,
                                                                gan.init_opt_state(opt, params),
                                                                pairs, rng, frozen)
  p = float(m["perceptual"])
  assert np.isfinite(p) and p > 0
  np.testing.assert_allclose(float(m["g_loss"]),
                             float(m["l1"] + 0.5 * m["adv"] + 2.0 * m["perceptual"]), rtol=1e-6)
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(new))

  def perceptual_of_g(g):
    fake = gan.generate(sp, g, pairs, rng)
    return losses.perceptual_loss(kind, frozen, fake, pairs["image"])

  grad = jax.jit(jax.grad(perceptual_of_g))(params["G"])
  norm = float(optax.tree.norm(grad))
  assert np.isfinite(norm) and norm > 0


def test_perceptual_needs_its_weights():
  with pytest.raises(ValueError, match="loss.perceptual='lpips_vgg'.*loss.vgg_weights"):
    losses.perceptual_loss("lpips_vgg", None, jnp.zeros((1, HW, HW, 3)), jnp.zeros((1, HW, HW, 3)))
  with pytest.raises(ValueError, match="loss.perceptual='mse'"):
    losses.check_perceptual("mse")


def test_second_order_matches_central_finite_differences_float64():
  """The exact meta-gradient with lambda_b > 0 and LPIPS-VGG (tiny trunk, K=2 SGD steps)
  agrees with central differences of the query losses along random directions."""
  with jax.enable_x64(True):
    frozen = _tiny_variables(seed=3, dtype=jnp.float64)
    sp = _spec("lpips_vgg", lambda_b=2.0)
    lp = tiny.loop(sp, "sgd", lr=0.1, steps=2)
    params = tiny.init_params(sp, seed=1, dtype=jnp.float64)
    rng_np = np.random.default_rng(3)
    task = {"support": _pairs(rng_np, 2, np.float64), "query": _pairs(rng_np, 2, np.float64)}
    rng = jax.random.PRNGKey(0)
    est = jax.jit(functools.partial(estimators.second_order, lp))
    grads, m = est(params, task, rng, frozen)
    terms = jax.jit(functools.partial(gan.gan_losses, sp))(params, task["query"], rng, frozen)
    assert float(terms["perceptual"]) > 0.01  # the term is really there

    def f(theta):  # (L_G, L_D)(Adapt_K(theta); T(te)), as the estimator reports them
      _, mm = est(theta, task, rng, frozen)
      return np.array([mm["query_g_loss_after"], mm["query_d_loss_after"]])

    assert np.allclose(f(params), [m["query_g_loss_after"], m["query_d_loss_after"]])
    eps = 1e-6
    vrng = np.random.default_rng(0)
    for net, which in (("G", 0), ("D", 1)):
      for _ in range(2):
        v = jax.tree.map(lambda a: jnp.asarray(vrng.normal(size=a.shape), jnp.float64), params[net])
        plus = dict(params, **{net: jax.tree.map(lambda p, d: p + eps * d, params[net], v)})
        minus = dict(params, **{net: jax.tree.map(lambda p, d: p - eps * d, params[net], v)})
        fd = (f(plus)[which] - f(minus)[which]) / (2 * eps)
        analytic = float(ravel_pytree(grads[net])[0] @ ravel_pytree(v)[0])
        assert abs(fd - analytic) <= 1e-5 * max(abs(fd), 1e-3), (net, fd, analytic)


def _config_files():
  return sorted(glob.glob(os.path.join(ROOT, "configs", "*.py")))


def test_configs_default_to_lpips_vgg_where_the_term_is_on():
  assert config_lib.base_config().loss.perceptual == "lpips_vgg"
  assert _config_files()
  for path in _config_files():
    spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    c = module.get_config()
    if os.path.basename(path) == "synthetic.py":
      assert c.loss.lambda_b == 0, path
    else:
      assert c.loss.lambda_b > 0 and c.loss.perceptual == "lpips_vgg", path


def test_builders_wire_the_kind_and_the_weights(reference, tmp_path):
  _, variables, path = reference
  c = config_lib.base_config()
  c.loss.lambda_b = 2.0
  assert builders.build_spec(c, 8).perceptual == "lpips_vgg"
  with pytest.raises(ValueError, match="loss.vgg_weights is empty"):
    builders.load_frozen(c)
  c.loss.vgg_weights = str(tmp_path / "missing.msgpack")
  with pytest.raises(FileNotFoundError, match="missing.msgpack"):
    builders.load_frozen(c)
  c.loss.vgg_weights = path
  jax.tree.map(np.testing.assert_array_equal, builders.load_frozen(c), variables)
  c.loss.lambda_b = 0.0
  assert builders.load_frozen(c) is None
