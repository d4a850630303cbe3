"""Predictors that learn nothing: query images looked up in the raw shots of a task.

They are the sanity rows of the results table: a few-shot translation benchmark whose
learned rows do not beat them clearly is solved by memorising the shots.

Every predictor takes a task's n support pairs and its q query maps:
  support_maps:   int   [n, H, W]     class ids in [0, num_classes),
  support_images: float [n, H, W, 3]  images in [-1, 1],
  query_maps:     int   [q, H, W]     class ids,
and returns float32 [q, H, W, 3] images in the range of the support images. Pure numpy,
deterministic, no randomness.

  label_mean    each query pixel gets the mean colour, over every shot pixel, of its label;
  label_pixel   each query pixel (h, w) with label c gets the mean colour at (h, w) of the
                shots whose label at (h, w) is c; where no shot has c there, the label's
                mean (label_mean); where no shot has c anywhere, the shots' mean colour;
  nearest_shot  each query gets the image of the shot whose map agrees with the query map
                on the most pixels (pixel accuracy of one map against the other); ties go
                to the lowest shot index.

A label no shot shows gets the mean colour of all shot pixels (in label_mean as well).
"""
from typing import Callable, Dict

import numpy as np

Predictor = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def _check(support_maps: np.ndarray, support_images: np.ndarray, query_maps: np.ndarray) -> None:
  """One-line ValueError when the shapes do not fit the contract above."""
  if support_maps.ndim != 3 or support_images.shape != support_maps.shape + (3,):
    raise ValueError(f"lookups: support maps {support_maps.shape} and images "
                     f"{support_images.shape} must be [n,H,W] and [n,H,W,3]")
  if support_maps.shape[0] < 1:
    raise ValueError("lookups: need at least one support shot")
  if query_maps.ndim != 3 or query_maps.shape[1:] != support_maps.shape[1:]:
    raise ValueError(f"lookups: query maps {query_maps.shape} must be [q,H,W] with the "
                     f"support's H,W {support_maps.shape[1:]}")


def _label_means(support_maps: np.ndarray, support_images: np.ndarray,
                 num_labels: int) -> np.ndarray:
  """float64 [L, 3]: each label's mean colour over all shot pixels; the shots' mean colour
  for a label no shot shows."""
  labels = support_maps.reshape(-1)
  colours = support_images.reshape(-1, 3).astype(np.float64)
  counts = np.bincount(labels, minlength=num_labels)[:, None]
  sums = np.stack(
      [np.bincount(labels, weights=colours[:, c], minlength=num_labels) for c in range(3)], axis=-1)
  overall = colours.mean(axis=0)
  return np.where(counts > 0, sums / np.maximum(counts, 1), overall)


def _num_labels(support_maps: np.ndarray, query_maps: np.ndarray) -> int:
  return int(max(support_maps.max(initial=0), query_maps.max(initial=0))) + 1


def label_mean(support_maps: np.ndarray, support_images: np.ndarray,
               query_maps: np.ndarray) -> np.ndarray:
  """[q,H,W,3]: each query pixel coloured with its label's mean colour over the shots."""
  _check(support_maps, support_images, query_maps)
  means = _label_means(support_maps, support_images, _num_labels(support_maps, query_maps))
  return means[query_maps].astype(np.float32)


def label_pixel(support_maps: np.ndarray, support_images: np.ndarray,
                query_maps: np.ndarray) -> np.ndarray:
  """[q,H,W,3]: each query pixel's mean colour at that pixel over the shots with the same
  label there; else its label's mean (:func:`label_mean`)."""
  _check(support_maps, support_images, query_maps)
  fallback = _label_means(support_maps, support_images, _num_labels(support_maps, query_maps))
  images = support_images.astype(np.float64)
  out = np.empty(query_maps.shape + (3,), np.float32)
  for i, qmap in enumerate(query_maps):
    same = (support_maps == qmap[None]).astype(np.float64)  # [n, H, W]
    count = same.sum(axis=0)[..., None]  # [H, W, 1]
    mean = np.einsum("nhw,nhwc->hwc", same, images) / np.maximum(count, 1)
    out[i] = np.where(count > 0, mean, fallback[qmap])
  return out


def map_agreement(maps_a: np.ndarray, maps_b: np.ndarray) -> np.ndarray:
  """float64 [a, b]: the fraction of pixels where map i of maps_a [a,H,W] and map j of
  maps_b [b,H,W] have the same label."""
  a = maps_a.reshape(maps_a.shape[0], 1, -1)
  b = maps_b.reshape(1, maps_b.shape[0], -1)
  return (a == b).mean(axis=-1)


def nearest_shot(support_maps: np.ndarray, support_images: np.ndarray,
                 query_maps: np.ndarray) -> np.ndarray:
  """[q,H,W,3]: for each query, the image of the shot whose map agrees with the query map
  on the most pixels (:func:`map_agreement`; ties to the lowest shot index)."""
  _check(support_maps, support_images, query_maps)
  best = np.argmax(map_agreement(query_maps, support_maps), axis=1)  # first maximum
  return support_images[best].astype(np.float32)


PREDICTORS: Dict[str, Predictor] = {
    "lookup_label": label_mean, "lookup_pixel": label_pixel, "nearest_shot": nearest_shot
}


def predict_all(support_maps: np.ndarray, support_images: np.ndarray,
                query_maps: np.ndarray) -> np.ndarray:
  """float32 [len(PREDICTORS), q, H, W, 3]: every predictor's query images, in the order
  of PREDICTORS (keyed by the results table's row ids)."""
  return np.stack([f(support_maps, support_images, query_maps) for f in PREDICTORS.values()])
