"""The user-facing log: rounded metric lines, ETA, library chatter dropped."""
import logging

from bil_jax import console


def test_metric_lines_are_rounded_to_three_significant_digits():
  line = console.metric_line(
      {"l1": 0.44178092, "d_loss": 1.4233757, "steps": 1234.5, "tiny": 0.000123456, "skips": 0.0})
  assert line == "d_loss 1.42, l1 0.442, skips 0, steps 1234, tiny 0.000123"


def test_progress_gives_an_eta_from_the_pace_after_the_first_step():
  assert console.progress(1, 100, 0, 0.0) == "step 1/100 (1%)"  # no pace yet
  assert console.progress(11, 100, 0, 20.0) == "step 11/100 (11%, ETA 2m58s)"
  assert console.progress(100, 100, 0, 99.0) == "step 100/100 (100%)"
  assert console.progress(3, 20, 1, 10.0, "test task") == "test task 3/20 (15%, ETA 2m50s)"
  # Two devices: tasks 1-2 end together (the first round), 3-4 a round (10 s) later; the
  # pace counts whole rounds: none after the first, 2 tasks per 10 s after the second
  # (one task's pace would give task 2 an ETA of 0 s and task 3 twice the true one).
  assert console.progress(2, 20, 0, 0.0, "test task", 2) == "test task 2/20 (10%)"
  assert console.progress(3, 20, 0, 10.0, "test task", 2) == "test task 3/20 (15%, ETA 1m25s)"
  assert console.progress(4, 20, 0, 10.0, "test task", 2) == "test task 4/20 (20%, ETA 1m20s)"


def _record(path, level, msg="m"):
  return logging.LogRecord("x", level, path, 1, msg, None, None)


def test_quiet_filter_drops_library_info_but_keeps_warnings_and_our_lines():
  f = console.QuietFilter()
  assert f.filter(_record("/site-packages/bil_jax/loop.py", logging.INFO))
  assert not f.filter(_record("/site-packages/jax/_src/xla_bridge.py", logging.INFO))
  assert not f.filter(_record("/site-packages/clu/metric_writers/logging_writer.py", logging.INFO))
  assert f.filter(_record("/site-packages/orbax/checkpoint/x.py", logging.WARNING))
  assert not f.filter(
      _record("/site-packages/tensorflow_datasets/core/dataset_builder.py", logging.WARNING))
  formatted = console.ShortFormatter().format(_record("/a.py", logging.WARNING, "careful"))
  assert formatted.endswith(" warning: careful") and len(formatted.split()[0]) == 8
