"""Device meshes for minibatch training: data split over a 1-D mesh, state replicated."""

from __future__ import annotations


import jax
import numpy as np


def data_mesh(devices=None):
  """A 1-D ``jax.sharding.Mesh`` over ``devices`` (default: all devices of all processes),
  axis "data"."""
  devices = jax.devices() if devices is None else devices
  return jax.sharding.Mesh(np.asarray(devices), ("data",))


def replicated(mesh):
  """Sharding that puts a full copy on every device of ``mesh`` (params, whole datasets)."""
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())


def batch_sharded(mesh):
  """Sharding that splits the leading (batch) axis over the "data" axis of ``mesh``."""
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
