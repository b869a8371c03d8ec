"""Flax modules used by the experiments.

Every module is called as ``model.apply(variables, x, train=bool, ...)`` and returns logits;
binary models (``num_outputs=1``) return shape ``(n,)``. Mutable collections (batch-norm
statistics) live in ``variables`` and are carried by :class:`gs_jax.train.TrainState`.
"""
from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


def torch_linear_kernel_init(key, shape, dtype=jnp.float32):
  """PyTorch's ``nn.Linear`` default: ``U(±1/√fan_in)`` (kaiming_uniform with a=√5)."""
  bound = 1.0 / jnp.sqrt(shape[0])
  return jax.random.uniform(key, shape, dtype, -bound, bound)


def torch_linear_bias_init(fan_in: int) -> Callable:
  """PyTorch's ``nn.Linear`` default bias: ``U(±1/√fan_in)``."""
  def init(key, shape, dtype=jnp.float32):
    bound = 1.0 / jnp.sqrt(fan_in)
    return jax.random.uniform(key, shape, dtype, -bound, bound)
  return init


INITS = ("torch", "xavier", "lecun")


def small_fan_in_dot_general(lhs, rhs, dimension_numbers, precision=None,
                             preferred_element_type=None):
  """``lhs @ rhs`` for a tiny contraction (fan-in ≤ 4) as a sum of broadcast products.

  XLA:CPU runs a (n×2)·(2×h) product as a general matmul with a poor inner loop; written
  elementwise it fuses with the bias and ReLU (and so does its gradient), which makes the
  two-moons nets ~3× faster on CPU. Same result as ``lax.dot_general`` up to rounding.
  """
  del precision, preferred_element_type
  (lc, rc), _ = dimension_numbers
  assert tuple(lc) == (lhs.ndim - 1,) and tuple(rc) == (0,), dimension_numbers
  return sum(lhs[..., k, None] * rhs[k] for k in range(lhs.shape[-1]))


def _dense(features: int, fan_in: int, init: str, name: str) -> nn.Dense:
  kwargs = {"dot_general": small_fan_in_dot_general} if fan_in <= 4 else {}
  if init == "torch":
    return nn.Dense(features, kernel_init=torch_linear_kernel_init,
                    bias_init=torch_linear_bias_init(fan_in), name=name, **kwargs)
  if init == "xavier":
    return nn.Dense(features, kernel_init=nn.initializers.xavier_uniform(),
                    bias_init=nn.initializers.zeros, name=name, **kwargs)
  if init == "lecun":
    return nn.Dense(features, name=name, **kwargs)
  raise ValueError(f"kernel_init must be one of {INITS}; got {init!r}")


class MLP(nn.Module):
  """ReLU multi-layer perceptron ``d → hidden[0] → … → hidden[-1] → num_outputs``.

  The two-layer net of DESIGN §3.1 is ``MLP(hidden=(500,))``; the Appendix-B variants are
  ``dropout_rate=0.7`` (dropout after every hidden ReLU), ``batch_norm=True`` (BN between each
  hidden linear layer and its ReLU, PyTorch's momentum 0.1 and eps 1e-5), five layers
  (``hidden=(500,)*4``), and 10× wider/narrower (``hidden=(5000,)``/``(50,)``).

  Attributes:
    hidden: widths of the hidden layers.
    num_outputs: 1 gives logits of shape (n,), otherwise (n, num_outputs).
    kernel_init: "torch" (PyTorch's nn.Linear default, as the released code), "xavier" (Xavier-uniform
      weights, zero biases: the Colored-MNIST MLP) or "lecun" (flax's default).
    dropout_rate: dropout probability after each hidden activation (train mode only).
    batch_norm: batch normalisation before each hidden ReLU.
  """
  hidden: Sequence[int] = (500,)
  num_outputs: int = 1
  kernel_init: str = "torch"
  dropout_rate: float = 0.0
  batch_norm: bool = False

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = x.reshape(x.shape[0], -1)
    for i, width in enumerate(self.hidden):
      x = _dense(width, x.shape[-1], self.kernel_init, f"dense_{i}")(x)
      if self.batch_norm:
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                         name=f"bn_{i}")(x)
      x = nn.relu(x)
      if self.dropout_rate > 0:
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    x = _dense(self.num_outputs, x.shape[-1], self.kernel_init, "head")(x)
    return x[:, 0] if self.num_outputs == 1 else x


def two_layer_relu(width: int = 500, kernel_init: str = "torch", **kwargs) -> MLP:
  """The 2 → width → 1 ReLU net of DESIGN §3.1 (released code: width 500, PyTorch init)."""
  return MLP(hidden=(width,), num_outputs=1, kernel_init=kernel_init, **kwargs)
