"""The meta-gradient estimator benchmark: ``python -m bil_jax.bench`` (``bil-bench``).

Modules: :mod:`~bil_jax.bench.options` (the options and their flags), ``presets``,
``sweep`` (cost, fidelity and outcome of one config), ``cost``, ``fidelity``, ``outcome``,
``report`` (tables and plots), ``worker`` (one job in a fresh process), ``estimate``
(expected durations), ``device_check`` (one command for a new accelerator), ``torch_ref``
(the eager PyTorch reference; its networks in ``torch_nets``), ``precision`` (bfloat16
against float32) and ``retrieval`` (timing of the Eq. 3 retrieval). Nothing in the training
code imports this package.
"""
