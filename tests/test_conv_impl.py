"""The two convolution implementations (lax.conv and patch matmuls) agree, with gradients."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bil_jax.models import layers


@pytest.mark.parametrize("kernel,stride,padding,hw", [(4, 2, 1, (8, 12)), (3, 1, 1, (7, 5)),
                                                      (4, 1, 1, (6, 6)), (1, 1, 0, (4, 4))])
def test_conv2d_matmul_equals_xla_values_and_gradients(kernel, stride, padding, hw):
  kx, kk = jax.random.split(jax.random.PRNGKey(0))
  x = jax.random.normal(kx, (2, *hw, 3))
  k = jax.random.normal(kk, (kernel, kernel, 3, 5))
  outs = {impl: layers.conv2d(x, k, stride, padding, impl=impl) for impl in ("xla", "matmul")}
  np.testing.assert_allclose(outs["matmul"], outs["xla"], rtol=1e-5, atol=1e-5)
  ref = jax.lax.conv_general_dilated(x, k, (stride, stride), ((padding,) * 2,) * 2,
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
  np.testing.assert_allclose(outs["xla"], ref, rtol=1e-6, atol=1e-6)
  grads = {impl: jax.grad(lambda a, b: jnp.sum(jnp.sin(
      layers.conv2d(a, b, stride, padding, impl=impl))), argnums=(0, 1))(x, k)
           for impl in ("xla", "matmul")}
  for g_m, g_x in zip(grads["matmul"], grads["xla"]):
    np.testing.assert_allclose(g_m, g_x, rtol=1e-4, atol=1e-4)


def test_transposed_conv_impls_equal_flax_conv_transpose():
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 5, 7, 6))
  ref = nn.ConvTranspose(4, (4, 4), strides=(2, 2), padding=((2, 2), (2, 2)), use_bias=False)
  params = ref.init(jax.random.PRNGKey(2), x)
  want = ref.apply(params, x)
  for impl in ("xla", "matmul"):
    got = layers.transposed_conv_4x4_s2(x, params["params"]["kernel"], impl=impl)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
