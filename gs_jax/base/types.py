"""Type aliases for signatures, so that a reader sees what a function takes and returns.

JAX's containers are not expressible in Python's type system (a PyTree is any nesting of
lists, tuples, dicts and registered nodes), so these aliases document rather than constrain:
mypy treats :data:`PyTree` as ``Any``. Used in the typed core (:mod:`gs_jax.theory.dual`,
:mod:`gs_jax.nn.losses`, :mod:`gs_jax.theory.ntk`), checked by ``make lint``.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np

PyTree = Any
"""A nest of arrays (``jax.tree_util``): parameters, optimizer states, batches of arrays."""

Params = PyTree
"""A model's parameters: flax's ``variables["params"]``, a nest of arrays."""

Array = jax.Array
"""A JAX array (on a device, or a tracer inside ``jit``/``grad``/``vmap``)."""

ArrayLike = jax.typing.ArrayLike
"""What array arguments accept: JAX or NumPy arrays, NumPy scalars and Python numbers."""

HostOrDeviceArray = jax.Array | np.ndarray
"""What :mod:`gs_jax.theory.dual`'s functions return: NumPy outside an x64 scope, JAX inside it."""

ApplyFn = Callable[..., jax.Array]
"""A model's forward pass ``apply_fn(params, x) -> logits`` (extra arguments allowed)."""

PRNGKey = jax.Array
"""A key of ``jax.random`` (``jax.random.PRNGKey(seed)`` or ``jax.random.key(seed)``)."""
