"""One task's batch split over a mesh axis: what the models need to know about it.

The pairs of a task may be split over the 'batch' axis of the mesh (``bil_jax.parallel``),
each device holding a block of rows. While a model is traced inside :func:`batch_axis`
(``bil_jax.gan`` enters it from ``GanSpec.batch_axis`` around every ``apply``), batch
norm (``layers.Norm``) averages its moments over the axis, and :class:`Dropout` draws
the mask of the whole batch and keeps this device's rows; both then compute what one
device computes on the whole batch. Outside it (None, the default) nothing changes.
A trace-time setting, not state: it only decides which program is traced.
"""
import contextlib
import contextvars
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

_BATCH_AXIS = contextvars.ContextVar("bil_jax_batch_axis", default=None)


@contextlib.contextmanager
def batch_axis(name: Optional[str]):
  """Within it, models are traced for one device's rows of a batch split over the mesh
  axis ``name`` (inside ``shard_map``); None: the whole batch is here (no collective)."""
  token = _BATCH_AXIS.set(name)
  try:
    yield
  finally:
    _BATCH_AXIS.reset(token)


def current_batch_axis() -> Optional[str]:
  """The mesh axis the batch is split over while tracing (:func:`batch_axis`), or None."""
  return _BATCH_AXIS.get()


class Dropout(nn.Module):
  """``flax.linen.Dropout`` (same rng stream, same mask on an unsplit batch) that, while
  the batch's rows are split over a mesh axis (:func:`batch_axis`), draws the mask of the
  whole batch [B * axis size, ...] and keeps this device's block of rows: the same mask
  as on one device. x: [B, ...] -> [B, ...].

  Attributes:
    rate: the probability of zeroing an element.
    deterministic: True: no dropout (may also be passed to ``__call__``).
  """
  rate: float
  deterministic: Optional[bool] = None
  rng_collection: str = "dropout"

  @nn.compact
  def __call__(self, inputs, deterministic: Optional[bool] = None):
    deterministic = nn.merge_param("deterministic", self.deterministic, deterministic)
    if self.rate == 0.0 or deterministic:
      return inputs
    if self.rate == 1.0:
      return jnp.zeros_like(inputs)
    keep_prob = 1.0 - self.rate
    rng = self.make_rng(self.rng_collection)
    name = current_batch_axis()
    if name is None:
      mask = jax.random.bernoulli(rng, p=keep_prob, shape=inputs.shape)
    else:
      rows = inputs.shape[0]
      whole = jax.random.bernoulli(rng, p=keep_prob,
                                   shape=(rows * jax.lax.axis_size(name),) + inputs.shape[1:])
      mask = jax.lax.dynamic_slice_in_dim(whole, jax.lax.axis_index(name) * rows, rows)
    return jax.lax.select(mask, inputs / keep_prob, jnp.zeros_like(inputs))
