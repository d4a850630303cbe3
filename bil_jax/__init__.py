"""bil_jax: the BiLevel image-to-image translation paradigm in JAX/Flax."""
from bil_jax import tf_optional

tf_optional.install()  # clu's metric writers import where TensorFlow is missing
