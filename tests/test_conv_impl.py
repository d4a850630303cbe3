"""The two convolution implementations (lax.conv and patch matmuls) agree, with gradients."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bil_jax.models import convs


@pytest.mark.parametrize("kernel,stride,padding,hw", [(4, 2, 1, (8, 12)), (3, 1, 1, (7, 5)),
                                                      (4, 1, 1, (6, 6)), (1, 1, 0, (4, 4))])
def test_conv2d_matmul_equals_xla_values_and_gradients(kernel, stride, padding, hw):
  kx, kk = jax.random.split(jax.random.PRNGKey(0))
  x = jax.random.normal(kx, (2, *hw, 3))
  k = jax.random.normal(kk, (kernel, kernel, 3, 5))
  outs = {impl: convs.conv2d(x, k, stride, padding, impl=impl) for impl in ("xla", "matmul")}
  np.testing.assert_allclose(outs["matmul"], outs["xla"], rtol=1e-5, atol=1e-5)
  ref = jax.lax.conv_general_dilated(x, k, (stride, stride), ((padding,) * 2,) * 2,
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
  np.testing.assert_allclose(outs["xla"], ref, rtol=1e-6, atol=1e-6)
  grads = {
      impl:
          jax.grad(lambda a, b: jnp.sum(jnp.sin(convs.conv2d(a, b, stride, padding, impl=impl))),
                   argnums=(0, 1))(x, k) for impl in ("xla", "matmul")
  }
  for g_m, g_x in zip(grads["matmul"], grads["xla"]):
    np.testing.assert_allclose(g_m, g_x, rtol=1e-4, atol=1e-4)


def test_transposed_conv_impls_equal_flax_conv_transpose():
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 5, 7, 6))
  ref = nn.ConvTranspose(4, (4, 4), strides=(2, 2), padding=((2, 2), (2, 2)), use_bias=False)
  params = ref.init(jax.random.PRNGKey(2), x)
  want = ref.apply(params, x)
  for impl in ("xla", "matmul"):
    got = convs.transposed_conv_4x4_s2(x, params["params"]["kernel"], impl=impl)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_second_derivatives_of_both_impls_agree_float64():
  """Hessian-vector products (what the second-order meta-gradient differentiates) agree.

  f(x, k) = sum(sin(up(conv(x, k1) stride 2, k2))) mixes a strided conv and a transposed
  conv; its Hessian-vector product in (x, k1, k2) is the same for both implementations.
  """
  with jax.enable_x64(True):
    keys = jax.random.split(jax.random.PRNGKey(3), 6)
    x = jax.random.normal(keys[0], (2, 8, 8, 3), jnp.float64)
    k1 = jax.random.normal(keys[1], (4, 4, 3, 5), jnp.float64)
    k2 = jax.random.normal(keys[2], (4, 4, 5, 2), jnp.float64)
    v = tuple(jax.random.normal(kk, a.shape, jnp.float64) for kk, a in zip(keys[3:], (x, k1, k2)))

    def hvp(impl):

      def f(args):
        a, b, c = args
        h = convs.conv2d(a, b, 2, 1, impl=impl)
        return jnp.sum(jnp.sin(convs.transposed_conv_4x4_s2(jnp.tanh(h), c, impl=impl)))

      return jax.jvp(jax.grad(f), ((x, k1, k2),), (v,))[1]

    for got, want in zip(hvp("matmul"), hvp("xla")):
      np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


def test_conv_impl_resolves_auto_per_backend_and_rejects_unknown(monkeypatch):
  monkeypatch.delenv("BIL_JAX_CONV_IMPL", raising=False)
  want = "matmul" if jax.default_backend() == "cpu" else "xla"
  assert convs.conv_impl() == want
  assert convs.conv_impl("xla") == "xla"
  monkeypatch.setenv("BIL_JAX_CONV_IMPL", "xla")
  assert convs.conv_impl() == "xla"
  monkeypatch.setenv("BIL_JAX_CONV_IMPL", "cudnn")
  with pytest.raises(ValueError, match="BIL_JAX_CONV_IMPL='cudnn'"):
    convs.conv_impl()
