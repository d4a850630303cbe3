"""bil_jax.cpu_devices: how many XLA CPU devices main exposes, and when it leaves them alone.

The whole run on those devices (bitwise equal to one device) is in tests/test_multihost.py.
"""
import os

import jax
import pytest

from bil_jax import cpu_devices


def test_count_is_one_per_core_capped_or_the_variable():
  assert cpu_devices.count_for(None, 2) == 2
  assert cpu_devices.count_for("", 64) == cpu_devices.MAX_AUTO
  assert cpu_devices.count_for(" 3 ", 64) == 3
  assert cpu_devices.count_for("1", 2) == 1


@pytest.mark.parametrize("bad", ["0", "-2", "two", "1.5"])
def test_a_bad_count_is_a_one_line_error_naming_the_variable(bad):
  with pytest.raises(ValueError, match=r"^BIL_JAX_CPU_DEVICES=.* is not a positive integer"):
    cpu_devices.count_for(bad, 2)


def test_nothing_is_exposed_where_xla_flags_set_the_count_or_hosts_are_many(monkeypatch):
  monkeypatch.setattr(cpu_devices, "_backends_started", lambda: False)
  monkeypatch.delenv(cpu_devices.ENV, raising=False)
  monkeypatch.setenv("XLA_FLAGS", f"{cpu_devices.FLAG}=4")
  assert cpu_devices.expose(1) == 0
  monkeypatch.setenv("XLA_FLAGS", "")
  assert cpu_devices.expose(2) == 0
  monkeypatch.setenv(cpu_devices.ENV, "1")
  assert cpu_devices.expose(1) == 0
  assert cpu_devices.FLAG not in os.environ["XLA_FLAGS"]


def test_exposing_sets_xla_flags_before_a_backend_starts(monkeypatch):
  monkeypatch.setattr(cpu_devices, "_backends_started", lambda: False)
  monkeypatch.setattr(cpu_devices, "_exposed", 0)
  monkeypatch.setenv("XLA_FLAGS", "--xla_backend_optimization_level=0")
  monkeypatch.setenv(cpu_devices.ENV, "3")
  assert cpu_devices.expose(1) == 3
  assert os.environ["XLA_FLAGS"] == (f"--xla_backend_optimization_level=0 {cpu_devices.FLAG}=3")
  assert "3 XLA CPU devices" in cpu_devices.describe()


def test_a_started_backend_is_left_alone(monkeypatch):
  """In this test process JAX's backend is up (conftest imports jax and computes): too late."""
  jax.numpy.zeros(1).block_until_ready()
  monkeypatch.setenv("XLA_FLAGS", "")
  monkeypatch.delenv(cpu_devices.ENV, raising=False)
  assert cpu_devices.expose(1) == 0
