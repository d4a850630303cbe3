"""TensorBoard event files without TensorFlow: a clu ``MetricWriter`` over tensorboard alone.

:class:`EventFileWriter` writes what clu's TensorFlow ``SummaryWriter`` writes -- scalars
(float32 tensors, 'scalars' plugin), images (``[width, height, png, ...]`` string tensors,
'images' plugin), text ('text' plugin), histograms and hparams -- as v2 summaries in an
``events.out.tfevents.*.v2`` file (:class:`EventFile`, tensorboard's record framing on a
plain file) and tensorboard's protobuf summaries. TensorBoard and ``EventAccumulator`` read
its files like clu's. Unless TensorFlow is already imported, :mod:`bil_jax.tf_optional`
makes clu's ``SummaryWriter`` (and so ``metric_writers.create_default_writer``) build this
writer.
"""
import itertools
import os
import socket
import threading
import time
from typing import Any, Mapping, Optional

from absl import logging
from clu.internal import utils as clu_utils
from clu.metric_writers import interface
import numpy as np
from tensorboard.compat.proto import event_pb2
from tensorboard.compat.proto import summary_pb2
from tensorboard.plugins.histogram import summary_v2 as histogram_summary
from tensorboard.plugins.hparams import summary_v2 as hparams_summary
from tensorboard.plugins.image import metadata as image_metadata
from tensorboard.plugins.scalar import summary_v2 as scalar_summary
from tensorboard.plugins.text import summary_v2 as text_summary
from tensorboard.summary.writer import record_writer
from tensorboard.util import tensor_util

from bil_jax import io_utils


def image_uint8(images: np.ndarray) -> np.ndarray:
  """Images as uint8 the way ``tf.image.convert_image_dtype(.., saturate=True)`` does it.

  Args:
    images: uint8, or floats in [0, 1] (clipped; ``x * 255.5`` truncated), any shape.

  Returns:
    uint8 array of the same shape.
  """
  images = np.asarray(images)
  if images.dtype == np.uint8:
    return images
  if not np.issubdtype(images.dtype, np.floating):
    raise ValueError(f"images must be uint8 or float in [0, 1], got {images.dtype}")
  return np.clip(images.astype(np.float64) * 255.5, 0, 255).astype(np.uint8)


def image_summary(tag: str, images: np.ndarray) -> summary_pb2.Summary:
  """The v2 image summary of ``images`` [N,H,W,C] or [H,W,C] (C 1, 3 or 4), as PNGs."""
  images = image_uint8(images)
  if images.ndim == 3:
    images = images[None]
  if images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
    raise ValueError(f"image summary {tag!r}: images must be [N,H,W,C] or [H,W,C] with "
                     f"C in (1, 3, 4), got shape {images.shape}")
  pngs = [io_utils.png_bytes(im[..., 0] if im.shape[-1] == 1 else im) for im in images]
  height, width = images.shape[1:3]
  tensor = tensor_util.make_tensor_proto(
      [str(width).encode(), str(height).encode()] + pngs, dtype=np.object_)
  summary = summary_pb2.Summary()
  summary.value.add(tag=tag, tensor=tensor,
                    metadata=image_metadata.create_summary_metadata(None, None))
  return summary


_FILE_IDS = itertools.count()


class EventFile:
  """One ``events.out.tfevents.<time>.<host>.<pid>.<n>.v2`` file in a local ``logdir``:
  the records tensorboard's ``EventFileWriter`` writes (its ``RecordWriter`` framing, a
  first event naming the file version), written synchronously on a plain file. That writer
  opens files through ``tf.io.gfile``, which imports TensorFlow wherever it is installed
  (about 5 s of CPU per process, bil_jax.tf_optional)."""

  def __init__(self, logdir: str):
    os.makedirs(logdir, exist_ok=True)
    name = (f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}."
            f"{os.getpid()}.{next(_FILE_IDS)}.v2")
    self.path = os.path.join(logdir, name)
    self._lock = threading.Lock()
    self._file = open(self.path, "wb")  # pylint: disable=consider-using-with
    self._records = record_writer.RecordWriter(self._file)
    self.add_event(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))
    self.flush()

  def add_event(self, event: event_pb2.Event) -> None:
    with self._lock:
      self._records.write(event.SerializeToString())

  def flush(self) -> None:
    with self._lock:
      if not self._file.closed:
        self._file.flush()

  def close(self) -> None:
    with self._lock:
      self._file.close()


class EventFileWriter(interface.MetricWriter):
  """A clu MetricWriter writing TensorBoard event files into ``logdir``, TensorFlow-free."""

  def __init__(self, logdir: str):
    super().__init__()
    self._writer = EventFile(logdir)

  def _add(self, step: int, summary: summary_pb2.Summary) -> None:
    self._writer.add_event(event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary))

  def _add_each(self, step: int, summaries) -> None:
    summary = summary_pb2.Summary()
    for s in summaries:
      summary.value.extend(s.value)
    if summary.value:
      self._add(step, summary)

  def write_summaries(self, step: int, values: Mapping[str, Any],
                      metadata: Optional[Mapping[str, Any]] = None):
    summary = summary_pb2.Summary()
    for key, value in values.items():
      md = (metadata or {}).get(key)
      if isinstance(md, bytes):
        md = summary_pb2.SummaryMetadata.FromString(md)
      summary.value.add(tag=key, tensor=tensor_util.make_tensor_proto(np.asarray(value)),
                        metadata=md)
    self._add(step, summary)

  def write_scalars(self, step: int, scalars: Mapping[str, Any]):
    self._add_each(step, (scalar_summary.scalar_pb(k, np.asarray(v)) for k, v in scalars.items()))

  def write_images(self, step: int, images: Mapping[str, Any]):
    self._add_each(step, (image_summary(k, v) for k, v in images.items()))

  def write_videos(self, step: int, videos: Mapping[str, Any]):
    logging.log_first_n(logging.WARNING, "EventFileWriter does not write videos.", 1)

  def write_audios(self, step: int, audios: Mapping[str, Any], *, sample_rate: int):
    logging.log_first_n(logging.WARNING, "EventFileWriter does not write audio.", 1)

  def write_texts(self, step: int, texts: Mapping[str, str]):
    self._add_each(step, (text_summary.text_pb(k, v) for k, v in texts.items()))

  def write_histograms(self, step: int, arrays: Mapping[str, Any],
                       num_buckets: Optional[Mapping[str, int]] = None):
    self._add_each(step, (histogram_summary.histogram_pb(k, np.asarray(v),
                                                         (num_buckets or {}).get(k))
                          for k, v in arrays.items()))

  def write_hparams(self, hparams: Mapping[str, Any]):
    self._add(0, hparams_summary.hparams_pb(dict(clu_utils.flatten_dict(hparams))))

  def flush(self):
    self._writer.flush()

  def close(self):
    self._writer.close()
