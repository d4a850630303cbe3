"""The rows of the results table, its metrics, and the comparisons the report makes.

One home for these facts: ``evaluate`` (which computes the rows) and ``report`` (which
tabulates and compares them) both read them from here.

Rows, by id, in table order (X is the model, n the shots):

  x               X: the conventional model (pre-training checkpoint), no adaptation
  x_nshot         X (n-shot): X after IS adaptation on the n shots
  xplus           X+: X trained on as many more pair-gradients as meta-training used
  xplus_nshot     X+ (n-shot)
  bil_noaux       BiL-X w/o Aux (n-shot): the meta-trained GP after IS adaptation
  bil             BiL-X (n-shot): the GP fine-tuned on the Eq. 3 auxiliary tasks, then IS
  bil_aux_random  BiL-X Aux-random (n-shot): Aux on random training tasks instead
  bil_aux_merged  BiL-X Aux-merged (n-shot): the auxiliary pairs merged into the IS training
  gp              BiL-X (GP): the meta-trained GP, no adaptation
  lookup_label    label-mean lookup from the n shots (learns nothing)
  lookup_pixel    label x pixel lookup from the n shots (learns nothing)
  nearest_shot    the image of the shot whose map is most similar to the query's
"""
from typing import Dict, NamedTuple, Sequence, Tuple

ROW_IDS = ("x", "x_nshot", "xplus", "xplus_nshot", "bil_noaux", "bil", "bil_aux_random",
           "bil_aux_merged", "gp", "lookup_label", "lookup_pixel", "nearest_shot")
# The rows adapted on the n shots (IS adaptation, or Aux then IS).
NSHOT_ROWS = ("x_nshot", "xplus_nshot", "bil_noaux", "bil", "bil_aux_random", "bil_aux_merged")
LOOKUP_ROWS = ("lookup_label", "lookup_pixel", "nearest_shot")
# The n-shot baselines the headline compares BiL with; results.json's "strongest_baseline"
# names the one that is better on validation.
BASELINE_ROWS = ("x_nshot", "xplus_nshot")

# What evaluate computes per query image (results.json keeps all of them).
METRIC_KEYS = ("lpips", "ssim", "mse", "psnr")
PRIMARY = "ssim"
# What the report tabulates and compares, primary first. MSE is left out: per image,
# PSNR = 10 log10(4 / MSE) (bil_jax.metrics), the same measurement, reported once as PSNR.
REPORTED = ("ssim", "psnr", "lpips")
LABELS = {"lpips": "LPIPS↓", "ssim": "SSIM↑", "mse": "MSE↓", "psnr": "PSNR↑"}
LOWER_IS_BETTER = {"lpips": True, "ssim": False, "mse": True, "psnr": False}
# PSNR is already a log ratio (dB): its difference is the meaningful relative measure.
RELATIVE = {"lpips": True, "ssim": True, "mse": True, "psnr": False}

# Stand-ins in COMPARISONS, resolved per results file (report.resolve_comparisons).
STRONGEST_BASELINE = "strongest_baseline"  # results.json "strongest_baseline"
BEST_LOOKUP = "best_lookup"  # the lookup row with the highest mean primary metric

DISPLAY_NAMES = {"pix2pix": "Pix2pix", "pg2": "PG2"}


class Comparison(NamedTuple):
  """The paired difference a - b of two row ids (or the stand-ins above) and its role."""
  a: str
  b: str
  role: str


COMPARISONS: Tuple[Comparison, ...] = (
    Comparison("bil", STRONGEST_BASELINE, "headline: BiL vs the strongest baseline"),
    Comparison("bil", "x_nshot", "BiL vs fine-tuning X"),
    Comparison("bil", "xplus_nshot", "BiL vs fine-tuning X+ (equal training)"),
    Comparison("bil", "bil_noaux", "Aux helps"),
    Comparison("bil", "bil_aux_random", "Eq. 3 retrieval helps"),
    Comparison("bil_aux_merged", "bil", "merging Aux pairs into IS (Sec. 3.2)"),
    Comparison("x_nshot", "x", "fine-tuning helps X"),
) + tuple(Comparison(r, BEST_LOOKUP, "learning beats the lookups") for r in NSHOT_ROWS)


def row_names(model_name: str, shots: int) -> Dict[str, str]:
  """{row id: display name} of every row of ROW_IDS for model X with n shots, in order."""
  x = DISPLAY_NAMES.get(model_name, model_name)
  n = f"({shots}-shot)"
  return {
      "x": x, "x_nshot": f"{x} {n}", "xplus": f"{x}+", "xplus_nshot": f"{x}+ {n}",
      "bil_noaux": f"BiL-{x} w/o Aux {n}", "bil": f"BiL-{x} {n}",
      "bil_aux_random": f"BiL-{x} Aux-random {n}", "bil_aux_merged": f"BiL-{x} Aux-merged {n}",
      "gp": f"BiL-{x} (GP)", "lookup_label": f"Label-mean lookup {n}",
      "lookup_pixel": f"Label×pixel lookup {n}", "nearest_shot": f"Nearest shot {n}"
  }


def in_table_order(ids: Sequence[str]) -> Tuple[str, ...]:
  """The row ids of ``ids`` in ROW_IDS order; ValueError naming any unknown id."""
  unknown = sorted(set(ids) - set(ROW_IDS))
  if unknown:
    raise ValueError(f"unknown row ids {unknown}; rows.ROW_IDS has {list(ROW_IDS)}")
  return tuple(r for r in ROW_IDS if r in ids)
