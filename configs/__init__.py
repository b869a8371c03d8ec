"""Experiment configs: one module per experiment, ``get_config(preset)`` plus ``PRESETS`` and
``HELP`` (see :mod:`gs_jax.cli`). Each module's docstring carries the exact command of every
preset and the result it is expected to give."""
