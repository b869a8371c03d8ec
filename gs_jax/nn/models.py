"""Flax modules used by the experiments.

Every module is called as ``model.apply(variables, x, train=bool, ...)`` and returns logits;
binary models (``num_outputs=1``) return shape ``(n,)``. Mutable collections (batch-norm
statistics) live in ``variables`` and are carried by :class:`gs_jax.train.TrainState`.
"""

from __future__ import annotations

import os
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gs_jax.base import _compat


def torch_linear_kernel_init(key, shape, dtype=jnp.float32):
  """PyTorch's ``nn.Linear`` / ``nn.Conv2d`` default: ``U(±1/√fan_in)`` (kaiming_uniform with
  a=√5), fan_in = the product of all but the last (output) axis of a Flax kernel."""
  bound = 1.0 / jnp.sqrt(np.prod(shape[:-1]))
  return jax.random.uniform(key, shape, dtype, -bound, bound)


def torch_linear_bias_init(fan_in: int) -> Callable:
  """PyTorch's ``nn.Linear`` default bias: ``U(±1/√fan_in)``."""

  def init(key, shape, dtype=jnp.float32):
    bound = 1.0 / jnp.sqrt(fan_in)
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


INITS = ("torch", "xavier", "lecun")


@jax.custom_jvp
def _broadcast_matmul(x, w):
  return sum(x[..., k, None] * w[k] for k in range(x.shape[-1]))


@_broadcast_matmul.defjvp
def _broadcast_matmul_jvp(primals, tangents):
  # Tangents as ordinary matmuls: their transposes (the VJP) are then matmuls over the batch
  # or the width, which XLA:CPU runs well, instead of strided reductions of the broadcasts.
  x, w = primals
  dx, dw = tangents
  return _broadcast_matmul(x, w), dx @ w + x @ dw


def small_fan_in_dot_general(
  lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None
):
  """``lhs @ rhs`` for a tiny contraction (fan-in ≤ 4) as a sum of broadcast products.

  XLA:CPU runs a (n×2)·(2×h) product as a general matmul with a poor inner loop; written
  elementwise it fuses with the bias and ReLU; its JVP (and so its VJP) uses plain matmuls. This makes
  the two-moons nets ~2× faster on CPU. Same result as ``lax.dot_general`` up to rounding.
  """
  del precision, preferred_element_type
  (lc, rc), _ = dimension_numbers
  assert tuple(lc) == (lhs.ndim - 1,) and tuple(rc) == (0,), dimension_numbers
  return _broadcast_matmul(lhs, rhs)


def _inits(init: str, fan_in: int) -> tuple[Callable, Callable]:
  """(kernel_init, bias_init) for the ``kernel_init`` names of :class:`MLP`."""
  if init == "torch":
    return torch_linear_kernel_init, torch_linear_bias_init(fan_in)
  if init == "xavier":
    return nn.initializers.xavier_uniform(), nn.initializers.zeros
  if init == "lecun":
    return nn.initializers.lecun_normal(), nn.initializers.zeros
  raise ValueError(f"kernel_init must be one of {INITS}; got {init!r}")


def _dense(features: int, fan_in: int, init: str, name: str) -> nn.Dense:
  kwargs = {"dot_general": small_fan_in_dot_general} if fan_in <= 4 else {}
  kernel_init, bias_init = _inits(init, fan_in)
  return nn.Dense(features, kernel_init=kernel_init, bias_init=bias_init, name=name, **kwargs)


class _DenseParams(nn.Module):
  """The ``kernel`` and ``bias`` of an ``nn.Dense`` (same names, shapes, order and init
  stream, so the parameters equal ``nn.Dense``'s), for layers computed by :func:`relu_net`."""

  features: int
  fan_in: int
  kernel_init: str

  @nn.compact
  def __call__(self):
    kernel_init, bias_init = _inits(self.kernel_init, self.fan_in)
    return (
      self.param("kernel", kernel_init, (self.fan_in, self.features), jnp.float32),
      self.param("bias", bias_init, (self.features,), jnp.float32),
    )


def _is_zero(t) -> bool:
  return isinstance(t, jax.custom_derivatives.SymbolicZero)


@jax.custom_jvp
def relu_net(x, w1, b1, w2, b2):
  """``f(x) = Σ_j w2_j · relu(x·w1_j + b1_j) + b2``: a one-hidden-layer ReLU net with a scalar
  output, for inputs of small dimension (fan-in ≤ 4, the two-moons net of docs/protocols.md §3.1).

  Args: ``x`` (n, d), ``w1`` (d, h), ``b1`` (h,), ``w2`` (h,), ``b2`` scalar. Returns (n,).

  Same values as the layer-by-layer ``MLP``, with a JVP (hence a VJP) written for speed on
  CPU: with the ReLU mask ``M = 1[x·w1 + b1 > 0]`` (n, h), ``x̃ = [x, 1]`` and ``W̃ = [w1; b1]``
  (relu(z) = M ∘ x̃W̃, and ``w2`` factors out of the sum over the hidden units),

      df_n = Σ_k x̃_nk [M (dW̃ ∘ w2 + W̃ ∘ dw2)ᵀ]_nk + Σ_k dx_nk [M (w1 ∘ w2)ᵀ]_nk + db2,

  so the gradient with respect to all parameters is one (d+1, n)·(n, h) matmul
  ``(g ∘ x̃)ᵀ M`` instead of several passes over (n, h) arrays (~1.5× faster training).
  """
  return jnp.maximum(_broadcast_matmul(x, w1) + b1, 0.0) @ w2 + b2


def _relu_net_jvp(primals, tangents):
  x, w1, b1, w2, b2 = primals
  dx, dw1, db1, dw2, db2 = tangents
  z = _broadcast_matmul(x, w1) + b1
  mask = (z > 0).astype(z.dtype)
  out = jnp.maximum(z, 0.0) @ w2 + b2
  dout = jnp.zeros_like(out)
  if not (_is_zero(dw1) and _is_zero(db1) and _is_zero(dw2)):
    zero = lambda t, like: jnp.zeros_like(like) if _is_zero(t) else t
    w_t = jnp.concatenate([w1, b1[None]], axis=0)  # W̃ (d+1, h)
    dw_t = jnp.concatenate([zero(dw1, w1), zero(db1, b1)[None]], axis=0)
    q = dw_t * w2 + w_t * zero(dw2, w2)
    x_t = jnp.concatenate([x, jnp.ones_like(x[:, :1])], axis=1)  # x̃ (n, d+1)
    dout = dout + jnp.sum(x_t * (mask @ q.T), axis=1)
  if not _is_zero(dx):
    dout = dout + jnp.sum(dx * (mask @ (w1 * w2).T), axis=1)
  if not _is_zero(db2):
    dout = dout + db2
  return out, dout


relu_net.defjvp(_relu_net_jvp, symbolic_zeros=True)


class MLP(nn.Module):
  """ReLU multi-layer perceptron ``d → hidden[0] → … → hidden[-1] → num_outputs``.

  The two-layer net of docs/protocols.md §3.1 is ``MLP(hidden=(500,))``; the Appendix-B variants are
  ``dropout_rate=0.7`` (dropout after every hidden ReLU), ``batch_norm=True`` (BN between each
  hidden linear layer and its ReLU, PyTorch's momentum 0.1 and eps 1e-5), five layers
  (``hidden=(500,)*4``), and 10× wider/narrower (``hidden=(5000,)``/``(50,)``). A plain
  one-hidden-layer net on inputs of dimension ≤ 4 is computed by :func:`relu_net` (same
  parameters and values, faster gradients).

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
    if (
      len(self.hidden) == 1
      and x.shape[-1] <= 4
      and self.num_outputs == 1
      and not self.batch_norm
      and self.dropout_rate == 0
    ):
      w1, b1 = _DenseParams(self.hidden[0], x.shape[-1], self.kernel_init, name="dense_0")()
      w2, b2 = _DenseParams(1, self.hidden[0], self.kernel_init, name="head")()
      return relu_net(x, w1, b1, w2[:, 0], b2[0])
    for i, width in enumerate(self.hidden):
      x = _dense(width, x.shape[-1], self.kernel_init, f"dense_{i}")(x)
      if self.batch_norm:
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name=f"bn_{i}")(
          x
        )
      x = nn.relu(x)
      if self.dropout_rate > 0:
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    x = _dense(self.num_outputs, x.shape[-1], self.kernel_init, "head")(x)
    return x[:, 0] if self.num_outputs == 1 else x


def two_layer_relu(width: int = 500, kernel_init: str = "torch", **kwargs) -> MLP:
  """The 2 → width → 1 ReLU net of docs/protocols.md §3.1 (released code: width 500, PyTorch init)."""
  return MLP(hidden=(width,), num_outputs=1, kernel_init=kernel_init, **kwargs)


class NTKTwoLayerReLU(nn.Module):
  """Two-layer ReLU net in NTK parametrisation (for the finite-width Theorem-2 check).

  ``f(x; θ) = (1/√h) Σ_k a_k · relu(w_k·x/√d + β·b_k)`` with every parameter ``N(0, 1)`` at
  initialisation (Jacot et al.'s parametrisation): as the width ``h`` grows the empirical NTK
  converges to a fixed kernel and training stays in the linear regime of eq 3, so the dual
  predictions of ``gs_jax.dual`` become exact. Use it centred (``gs_jax.ntk.centred``) with
  the ridge ``λ/2‖θ − θ0‖²`` (``gs_jax.ntk.ridge_from_init``), docs/protocols.md §1.

  Attributes:
    width: hidden width h.
    bias_scale: β (0 removes the hidden bias).
  Returns logits of shape (n,).
  """

  width: int = 512
  bias_scale: float = 1.0

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    x = x.reshape(x.shape[0], -1)
    d = x.shape[-1]
    normal = nn.initializers.normal(1.0)
    w = self.param("w", normal, (d, self.width), x.dtype)
    a = self.param("a", normal, (self.width,), x.dtype)
    h = x @ w / jnp.sqrt(d)
    if self.bias_scale:
      h = h + self.bias_scale * self.param("b", normal, (self.width,), x.dtype)
    return nn.relu(h) @ a / jnp.sqrt(self.width)


class LinearModel(nn.Module):
  """The linearised model of eq 3, ``ŷ = Φ0 θ``, fed the rows of ``Φ0`` as inputs.

  One parameter vector ``"theta"`` (m,), zero at initialisation (θ0 = 0, so ŷ0 = 0 and the
  ridge of eq 5 is ``λ/2‖θ‖²``). Trained on the theory objective
  (:func:`gs_jax.losses.theory_objective`) its optimum is the dual fixed point of
  ``gs_jax.dual`` exactly (Theorem 2, Figure 5; docs/protocols.md §1, §3.2).
  """

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    return x @ self.param("theta", nn.initializers.zeros, (x.shape[-1],), x.dtype)


class FeatureScaledNet:
  """A network reparametrised so that its first feature is κ times stronger, U and V unchanged.

  ``θ = θ0 + P ω`` with ``P = I + (κ − 1) v v^T`` and ``v`` the first right singular vector of
  ``YΦ0 = U S V^T`` (eq 4): then ``YΦ0 P = U diag(κ s1, s2, …) V^T``, so in the linear regime
  only ``s1`` changes — the intervention of Theorem 2 (∂/∂s1² at fixed U) — while the network
  stays a finite nonlinear net. The trainable parameters are ``{"omega": ω}`` (ω0 = 0, so the
  ridge of eq 5 is ``λ/2‖ω‖²``); ``θ0`` (flat), ``v`` and ``κ`` live in a non-trainable
  ``"frozen"`` collection (:meth:`variables`), so configurations with different θ0, v, κ are
  vmapped as seeds. ``apply(variables, x, train=, rngs=, mutable=)`` is the interface of
  :func:`gs_jax.train.make_train_step`.

  Args:
    apply_fn: ``apply_fn(params, x) -> (n,)`` logits of the base network.
    unravel: maps a flat θ back to ``params`` (from ``jax.flatten_util.ravel_pytree``).
  """

  def __init__(self, apply_fn: Callable, unravel: Callable):
    self.apply_fn, self.unravel = apply_fn, unravel

  @staticmethod
  def variables(theta0, v, kappa) -> dict:
    """Initial variables: ω = 0 and the frozen ``θ0`` (flat, (m,)), ``v`` (m,) and ``κ``."""
    theta0 = jnp.asarray(theta0)
    return {
      "params": {"omega": jnp.zeros_like(theta0)},
      "frozen": {
        "theta0": theta0,
        "v": jnp.asarray(v, theta0.dtype),
        "kappa": jnp.asarray(kappa, theta0.dtype),
      },
    }

  @staticmethod
  def theta(variables):
    """The base network's flat parameters ``θ0 + ω + (κ − 1) v (v·ω)``."""
    fr, w = variables["frozen"], variables["params"]["omega"]
    return fr["theta0"] + w + (fr["kappa"] - 1.0) * fr["v"] * (fr["v"] @ w)

  def apply(self, variables, x, train: bool = False, rngs=None, mutable=False):
    del train, rngs
    out = self.apply_fn(self.unravel(self.theta(variables)), x)
    return (out, {"frozen": variables["frozen"]}) if mutable else out


# ----------------------------------------------------------------------------- CIFAR CNNs

# Per-channel statistics of the CIFAR-10 training set (docs/protocols.md §5; also used for CIFAR-2/100).
CIFAR_MEAN = (0.49139968, 0.48215841, 0.44653091)
CIFAR_STD = (0.24703223, 0.24348513, 0.26158784)

VGG_PAPER_STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
CNN_CPU_STAGES = ((16,), (32,), (64,))


class CifarVGG(nn.Module):
  """VGG-style CIFAR network of docs/protocols.md §3.3; input pixels in [0,1], normalisation inside.

  ``x ↦ (x − mean)/std`` per channel, then for every stage ``[3×3 conv (no bias) + BN + ReLU]``
  × len(stage) followed by a 2×2 max-pool, then global average pooling and one linear layer to
  ``num_classes`` logits (shape (n, num_classes), also for CIFAR-2). Normalising inside the
  model means attacks (:mod:`gs_jax.attacks`) perturb and clip raw [0,1] pixels.

  ``stages=VGG_PAPER_STAGES`` is the paper's network (five stages (2,2,3,3,3) of
  (64,128,256,512,512) channels, ``--preset=paper``); ``CNN_CPU_STAGES`` is the small CNN
  that trains on 2 CPU cores in minutes (``--preset=cpu``). BN uses PyTorch's momentum 0.1
  (flax ``momentum=0.9``) and eps 1e-5; its running statistics live in
  ``TrainState.model_state["batch_stats"]``.
  """

  stages: Sequence[Sequence[int]] = VGG_PAPER_STAGES
  num_classes: int = 10
  mean: Sequence[float] = CIFAR_MEAN
  std: Sequence[float] = CIFAR_STD

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = (x - jnp.asarray(self.mean, x.dtype)) / jnp.asarray(self.std, x.dtype)
    for s, widths in enumerate(self.stages):
      for j, width in enumerate(widths):
        x = nn.Conv(width, (3, 3), padding=1, use_bias=False, name=f"conv{s}_{j}")(x)
        x = nn.BatchNorm(
          use_running_average=not train, momentum=0.9, epsilon=1e-5, name=f"bn{s}_{j}"
        )(x)
        x = nn.relu(x)
      x = nn.max_pool(x, (2, 2), strides=(2, 2))
    # Global average pool: for the paper's VGG the map is already 1×1 (= flatten); for the
    # small CNN it keeps the head at 64 inputs (a flattened 4×4×64 head diverged at lr 0.05).
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes, name="head")(x)


class PreActBlock(nn.Module):
  """Pre-activation basic block (He et al. 2016, "Identity mappings"): ``BN → ReLU → 3×3 conv
  (stride here) → BN → ReLU → 3×3 conv``, added to the shortcut. The shortcut is the input,
  or, when the shape changes, a 1×1 conv (stride, no BN) of the *pre-activated* input
  (kuangliu/pytorch-cifar ``PreActBlock``)."""

  width: int
  stride: int = 1

  @nn.compact
  def __call__(self, x, train: bool = False):
    bn = lambda name: nn.BatchNorm(
      use_running_average=not train, momentum=0.9, epsilon=1e-5, name=name
    )
    out = nn.relu(bn("bn1")(x))
    shortcut = x
    if self.stride != 1 or x.shape[-1] != self.width:
      shortcut = nn.Conv(
        self.width,
        (1, 1),
        (self.stride, self.stride),
        padding=0,
        use_bias=False,
        name="shortcut_conv",
      )(out)
    y = nn.Conv(
      self.width, (3, 3), (self.stride, self.stride), padding=1, use_bias=False, name="conv1"
    )(out)
    y = nn.Conv(self.width, (3, 3), padding=1, use_bias=False, name="conv2")(nn.relu(bn("bn2")(y)))
    return y + shortcut


class PreActResNet(nn.Module):
  """Pre-activation ResNet for 32×32 inputs (Table 1's CIFAR-100 row, docs/protocols.md §3.3);
  input [0,1] pixels (n, 32, 32, 3), normalised inside as :class:`CifarVGG`.

  3×3 conv (64 channels, stride 1, no BN/ReLU after it), then stage ``k`` of ``blocks[k]``
  :class:`PreActBlock` of ``widths[k]`` channels (stride 2 from the second stage on), then
  BN + ReLU (``final_bn``; He et al.'s v2 and hysts' ``resnet_preact`` have it,
  kuangliu's PreActResNet18 does not), global average pooling (= the 4×4 average pool of a
  32×32 input) and ``Dense(num_classes)``: logits (n, num_classes). Defaults: PreAct-ResNet-18
  (blocks (2,2,2,2), widths (64,128,256,512), 11.2 M parameters for 100 classes). BN with
  PyTorch's momentum 0.1 and eps 1e-5; flax's default (LeCun-normal) initialisation.
  """

  num_classes: int = 10
  blocks: Sequence[int] = (2, 2, 2, 2)
  widths: Sequence[int] = (64, 128, 256, 512)
  final_bn: bool = True
  mean: Sequence[float] = CIFAR_MEAN
  std: Sequence[float] = CIFAR_STD

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = (x - jnp.asarray(self.mean, x.dtype)) / jnp.asarray(self.std, x.dtype)
    x = nn.Conv(self.widths[0], (3, 3), padding=1, use_bias=False, name="conv1")(x)
    for k, (n, w) in enumerate(zip(self.blocks, self.widths)):
      for j in range(n):
        x = PreActBlock(w, 2 if (k > 0 and j == 0) else 1, name=f"layer{k + 1}_{j}")(x, train)
    if self.final_bn:
      x = nn.relu(
        nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name="bn_final")(x)
      )
    return nn.Dense(self.num_classes, name="head")(jnp.mean(x, axis=(1, 2)))


CIFAR_MODELS = ("cpu", "paper", "released", "preact_resnet18")


def cifar_model(config: str, num_classes: int) -> nn.Module:
  """``config="paper"`` → the VGG of §3.3; ``"cpu"`` → the small CNN (3 stages of one conv,
  16/32/64 channels); ``"released"`` → :class:`NarLeNet`; ``"preact_resnet18"`` →
  :class:`PreActResNet` (Table 1's CIFAR-100 row)."""
  if config == "released":
    return NarLeNet(num_classes)
  if config == "paper":
    return CifarVGG(VGG_PAPER_STAGES, num_classes)
  if config == "cpu":
    return CifarVGG(CNN_CPU_STAGES, num_classes)
  if config == "preact_resnet18":
    return PreActResNet(num_classes)
  raise ValueError(f"config must be one of {CIFAR_MODELS}; got {config!r}")


# Patches built in two stages (k row shifts, then k column shifts) or as one concatenation of
# k² shifted slices: the same patch matrix, so the same forward sums. The transpose of the
# two-stage form (the input gradient) adds 2k shifted blocks instead of k². Measured per
# batch-1 step of NarLeNet: ~13% faster per PGD step and a few % per training step on XLA:CPU's
# thunk runtime (jax 0.10.2), ~10% slower on the legacy runtime (jax 0.5.3).
_TWO_STAGE_PATCHES = not _compat.HAS_LEGACY_CPU_RUNTIME


def _s2d_pool_index(k: int, c_in: int, c_out: int) -> np.ndarray:
  """Gather index of :func:`s2d_pool_kernel`: entry ``(di, dj, p, q, c, a, b, o)`` points at
  kernel entry ``(2di+p−a, 2dj+q−b, c, o)`` of the flattened (k, k, c_in, c_out) kernel, or at
  the appended zero (index k²·c_in·c_out) where that offset lies outside the kernel."""
  t = k // 2 + 1  # taps per axis on the 2×2-blocked input
  u = 2 * np.arange(t)[:, None, None] + np.arange(2)[None, :, None] - np.arange(2)[None, None, :]
  ok = (u >= 0) & (u < k)  # (di, p, a)
  flat = np.arange(k * k * c_in * c_out).reshape(k, k, c_in, c_out)
  idx = np.full((t, t, 2, 2, c_in, 2, 2, c_out), k * k * c_in * c_out, np.int32)
  for di, p, a in zip(*np.nonzero(ok)):
    for dj, q, b in zip(*np.nonzero(ok)):
      idx[di, dj, p, q, :, a, b, :] = flat[u[di, p, a], u[dj, q, b]]
  return idx.reshape(t * t * 4 * c_in, 4 * c_out)


def s2d_pool_kernel(kernel):
  """A VALID k×k convolution (k odd) followed by a 2×2 max-pool, as one product on the
  space-to-depth input (:func:`_s2d_conv_pool`).

  With the input in 2×2 blocks, ``x̃[i, j, (p, q, c)] = x[2i+p, 2j+q, c]``, the convolution at the
  four positions ``(2i+a, 2j+b)`` of pool window ``(i, j)`` reads the ``t×t`` blocks from
  ``(i, j)``, ``t = (k+1)/2``, so it is one matrix product with the kernel
  ``K̃[(di, dj, p, q, c), (a, b, o)] = K[2di+p−a, 2dj+q−b, c, o]`` (0 outside the kernel).
  Shape (k, k, c_in, c_out) → (t²·4·c_in, 4·c_out), by one gather."""
  k, _, c_in, c_out = kernel.shape
  padded = jnp.concatenate([kernel.reshape(-1), jnp.zeros((1,), kernel.dtype)])
  return padded[_s2d_pool_index(k, c_in, c_out)]


def _s2d_conv_pool(x, kernel, bias):
  """``max_pool2(conv(x, kernel) + bias)`` (VALID, stride 1; :func:`s2d_pool_kernel`): patches
  of t×t blocks of the space-to-depth input times the (t²·4·c_in, 4·c_out) kernel, then the max
  over the four (a, b) column blocks. Needs even H and W."""
  n, h, w, c = x.shape
  k, c_out = kernel.shape[0], kernel.shape[-1]
  if h % 2 or w % 2 or k % 2 == 0:
    raise ValueError(f"s2d conv-pool needs even H, W and an odd kernel; got {x.shape}, k={k}")
  t, ho, wo = k // 2 + 1, (h - k + 1) // 2, (w - k + 1) // 2
  xs = x.reshape(n, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
  xs = xs.reshape(n, h // 2, w // 2, 4 * c)
  rows = jnp.stack([xs[:, i : i + ho] for i in range(t)], axis=3)  # as _PatchConv's two stages
  patches = jnp.stack([rows[:, :, j : j + wo] for j in range(t)], axis=4)
  z = patches.reshape(n * ho * wo, t * t * 4 * c) @ s2d_pool_kernel(kernel)
  return z.reshape(n, ho, wo, 4, c_out).max(axis=3) + bias


class _PatchConv(nn.Module):
  """A VALID, stride-1 convolution (``kernel`` (kh, kw, c_in, c_out) and ``bias`` as
  ``nn.Conv``'s, PyTorch-default init), computed as patches × matrix or, with
  ``patches=False``, by XLA's convolution (same parameters, same sum).

  Why patches: on XLA:CPU (jax 0.5) convolutions inside a ``lax.scan`` run several times
  slower than called directly (measured 7.6 ms against 2.4 ms per batch-1 step of
  :class:`NarLeNet`; jax 0.10: ~400 against ~2,700 steps/s), and batch-1 training needs the
  scan. Shifted slices concatenated in (i, j, c) order, times the reshaped kernel, are the
  same sum; matmuls stay fast in loops. On large batches the patches cost memory traffic (k²
  copies of the input): evaluate them in small chunks (:func:`gs_jax.base.batching.map_chunks`)
  or use XLA's convolution, which is faster there outside loops.

  Why the unit batch axis on the product: the kernel's gradient is ``Pᵀ ḡ`` (P the (M, K)
  patches, ḡ the (M, c_out) output cotangent). Written as a plain matmul, XLA folds the
  transposes into a dot that contracts both operands' leading axis, which XLA:CPU runs
  through Eigen ~1.5–2× slower than the (c_out, M)·(M, K) product it builds when the dot
  has a batch axis (measured 45 against 23 µs for conv0's shapes at batch 1). The batch-1
  released step gets ~15–25% faster on jax 0.5.3 and 0.10.2 alike
  (``benchmarks/cifar_speed.py --protocol=released``); the sums are the same up to order.
  """

  features: int
  kernel_size: int = 5
  patches: bool = True
  two_stage: bool = _TWO_STAGE_PATCHES
  # Return max_pool2 of the convolution, computed by _s2d_conv_pool (same parameters).
  s2d_pool: bool = False

  @nn.compact
  def __call__(self, x):
    k, c_in = self.kernel_size, x.shape[-1]
    kernel = self.param("kernel", torch_linear_kernel_init, (k, k, c_in, self.features))
    bias = self.param("bias", torch_linear_bias_init(k * k * c_in), (self.features,))
    if self.s2d_pool:
      return _s2d_conv_pool(x, kernel, bias)
    if not self.patches:
      return (
        jax.lax.conv_general_dilated(
          x, kernel, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        + bias
      )
    n, h, w = x.shape[0], x.shape[1] - k + 1, x.shape[2] - k + 1
    if self.two_stage:  # rows shifted first, then columns: (n, h, w, i, j, c)
      rows = jnp.stack([x[:, i : i + h] for i in range(k)], axis=3)
      patches = jnp.stack([rows[:, :, j : j + w] for j in range(k)], axis=4)
    else:  # k² shifted slices in (i, j) order: (n, h, w, k²·c)
      patches = jnp.concatenate(
        [x[:, i : i + h, j : j + w, :] for i in range(k) for j in range(k)], axis=-1
      )
    m, k2c = n * h * w, k * k * c_in
    out = jax.lax.dot_general(  # (1, M, K)·(1, K, c_out): see the docstring for the unit axis
      patches.reshape(1, m, k2c),
      kernel.reshape(1, k2c, self.features),
      (((2,), (1,)), ((0,), (0,))),
    )
    return out.reshape(n, h, w, self.features) + bias


def _max_pool2(x):
  """2×2 max-pool, stride 2, as a reshape (cheaper than ``reduce_window`` on CPU)."""
  n, h, w, c = x.shape
  return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


class NarLeNet(nn.Module):
  """The released Figure-2 network (docs/protocols.md §3.3; NAR ``ourmodel.py``'s ``Net``).

  Input: [0,1] pixels (n, 32, 32, 3), scaled inside to ``2x − 1`` ∈ [−1,1] (the released
  ``Normalize((0.5,)*3, (0.5,)*3)``), so attacks perturb [0,1] pixels and an ε in pixel units
  is ε·2 in the released [−1,1] units. Then conv 5×5 3→12, leaky ReLU (0.01), max-pool 2;
  conv 5×5 12→32, leaky ReLU, max-pool 2; flatten in PyTorch's (C,H,W) order (800);
  800→240→192→``num_classes`` with leaky ReLU between. Every layer has PyTorch's default
  init ``U(±1/√fan_in)`` for weights and biases (:func:`torch_linear_kernel_init`).
  Other input sizes (H, W divisible by 4 after each valid 5×5 convolution, e.g. the 64×32
  dominoes of docs/protocols.md §3.8) widen only the first dense layer: its fan-in is the
  flattened size, 32·((H−4)/2−4)/2·((W−4)/2−4)/2 (2,080 at 64×32).
  ``patches``: convolutions as patches × matrix (fast at batch 1 inside compiled loops: the
  scanned training, the per-image attack loops) or, if False, XLA convolutions (faster for
  large batches outside loops); the parameters are the same.
  ``s2d_first``: conv0 and its max-pool as one product on the space-to-depth input
  (:func:`s2d_pool_kernel`; with ``patches``). That product has 44% more multiply-adds than
  conv0's patches (zeros of the 6×6 window) but larger matrices and patches 2.8× smaller.
  Measured per PGD step at batch 1 inside the attack loop: ~0.175 against ~0.20 ms on jax
  0.10.2; on jax 0.5.3's legacy runtime ~10% slower per step, but the loop compiles in half
  the time. Used for evaluation, where the numbers then match across stacks; training keeps
  the plain patches. The same function up to float reassociation (leaky ReLU is monotone, so
  it commutes with the max).
  """

  num_classes: int = 2
  slope: float = 0.01
  patches: bool = True
  s2d_first: bool = False

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train  # no batch norm or dropout
    act = lambda v: nn.leaky_relu(v, self.slope)
    x = 2.0 * x - 1.0
    for i, c_out in enumerate((12, 32)):
      if i == 0 and self.s2d_first and self.patches:
        x = act(_PatchConv(c_out, s2d_pool=True, name=f"conv{i}")(x))
        continue
      x = _max_pool2(act(_PatchConv(c_out, patches=self.patches, name=f"conv{i}")(x)))
    x = jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)  # torch's flatten order
    widths = ((x.shape[1], 240), (240, 192), (192, self.num_classes))  # 800 at 32×32
    for i, (f_in, f_out) in enumerate(widths):
      x = nn.Dense(
        f_out,
        kernel_init=torch_linear_kernel_init,
        bias_init=torch_linear_bias_init(f_in),
        name=f"fc{i}",
      )(x)
      x = act(x) if i < 2 else x
    return x


# ------------------------------------------------------------------ ResNets (CelebA, §3.5)


class ResNetBlock(nn.Module):
  """torchvision's BasicBlock (two 3×3 convs) or, with ``bottleneck``, its Bottleneck
  (1×1 → 3×3 (stride here, as torchvision ≥ 0.3 "ResNet v1.5") → 1×1 with 4× expansion);
  projection shortcut (1×1 conv + BN) when the shape changes."""

  width: int
  stride: int = 1
  bottleneck: bool = False

  @nn.compact
  def __call__(self, x, train: bool = False):
    bn = lambda name: nn.BatchNorm(
      use_running_average=not train, momentum=0.9, epsilon=1e-5, name=name
    )
    out_width = self.width * (4 if self.bottleneck else 1)
    s = (self.stride, self.stride)
    if self.bottleneck:
      y = nn.relu(
        bn("bn1")(nn.Conv(self.width, (1, 1), padding=0, use_bias=False, name="conv1")(x))
      )
      y = nn.relu(
        bn("bn2")(nn.Conv(self.width, (3, 3), s, padding=1, use_bias=False, name="conv2")(y))
      )
      y = bn("bn3")(nn.Conv(out_width, (1, 1), padding=0, use_bias=False, name="conv3")(y))
    else:
      y = nn.relu(
        bn("bn1")(nn.Conv(self.width, (3, 3), s, padding=1, use_bias=False, name="conv1")(x))
      )
      y = bn("bn2")(nn.Conv(self.width, (3, 3), padding=1, use_bias=False, name="conv2")(y))
    if x.shape[-1] != out_width or self.stride != 1:
      x = bn("downsample_bn")(
        nn.Conv(out_width, (1, 1), s, padding=0, use_bias=False, name="downsample_conv")(x)
      )
    return nn.relu(x + y)


class ResNet(nn.Module):
  """ResNet with ``num_outputs`` logits (1: shape ``(n,)``, else ``(n, num_outputs)``), input
  already normalised (ImageNet statistics), NHWC.

  ``stem="imagenet"``: 7×7/2 conv (padding 3) + BN + ReLU + 3×3/2 max-pool (padding 1, padded
  with −inf), torchvision's stem; ``"small"``: one 3×3/2 conv + BN + ReLU (for 64×64 CPU
  inputs). Stage ``k`` has ``blocks[k]`` blocks of ``widths[k]`` channels, stride 2 from the
  second stage on; then global average pooling (the *features*, (n, widths[-1]·expansion))
  and ``Dense(num_outputs)`` named ``head``. Every padding is explicit and symmetric, as
  PyTorch's (flax's ``"SAME"`` pads stride-2 convolutions asymmetrically). BN as PyTorch
  (momentum 0.1, eps 1e-5); its running statistics are
  ``TrainState.model_state["batch_stats"]``. With ``stem="imagenet"`` this is torchvision's
  ``resnet18``/``resnet50`` (v1.5) layer for layer (:mod:`gs_jax.convert` maps its weights;
  tests/nn/test_convert.py checks the logits against a PyTorch reference).

  ``return_features=True`` returns ``(logits, features)``.
  """

  blocks: Sequence[int] = (3, 4, 6, 3)
  widths: Sequence[int] = (64, 128, 256, 512)
  bottleneck: bool = True
  stem: str = "imagenet"
  num_outputs: int = 1

  @nn.compact
  def __call__(self, x, train: bool = False, return_features: bool = False):
    if self.stem == "imagenet":
      x = nn.Conv(self.widths[0], (7, 7), (2, 2), padding=3, use_bias=False, name="conv1")(x)
    else:
      x = nn.Conv(self.widths[0], (3, 3), (2, 2), padding=1, use_bias=False, name="conv1")(x)
    x = nn.relu(
      nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name="bn1")(x)
    )
    if self.stem == "imagenet":
      x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
    for k, (n, w) in enumerate(zip(self.blocks, self.widths)):
      for j in range(n):
        x = ResNetBlock(
          w, 2 if (k > 0 and j == 0) else 1, self.bottleneck, name=f"layer{k + 1}_{j}"
        )(x, train)
    features = jnp.mean(x, axis=(1, 2))
    logits = nn.Dense(self.num_outputs, name="head")(features)
    logits = logits[:, 0] if self.num_outputs == 1 else logits
    return (logits, features) if return_features else logits


RESNETS = {
  "resnet50": dict(blocks=(3, 4, 6, 3), widths=(64, 128, 256, 512), bottleneck=True),
  "resnet18": dict(blocks=(2, 2, 2, 2), widths=(64, 128, 256, 512), bottleneck=False),
  "resnet_small": dict(blocks=(1, 1, 1), widths=(16, 32, 64), bottleneck=False, stem="small"),
}


def resnet(name: str, num_outputs: int = 1) -> ResNet:
  """``"resnet50"`` (the released model), ``"resnet18"`` or ``"resnet_small"`` (CPU);
  ``num_outputs=1000`` gives torchvision's ImageNet head."""
  if name not in RESNETS:
    raise ValueError(f"model must be one of {tuple(RESNETS)}; got {name!r}")
  return ResNet(**RESNETS[name], num_outputs=num_outputs)


def load_pretrained(variables, path: str):
  """``variables`` with every leaf found in the checkpoint at ``path`` replaced by it.

  Expected format: a msgpack file written by
  ``flax.serialization.msgpack_serialize({"params": …, "batch_stats": …})`` whose tree has this
  module's names (e.g. ``params/layer1_0/conv1/kernel`` in HWIO layout, the BN ``scale``/
  ``bias``/``mean``/``var``), as converted from torchvision's ImageNet ResNet-50. The ``head``
  may be absent or of another shape (ImageNet's 1000 classes): it keeps its fresh
  initialisation, as the released code replaces ``fc``. Any other missing or mis-shaped leaf is
  an error.
  """
  from flax import serialization, traverse_util

  from gs_jax.base import errors

  if not os.path.isfile(path):
    raise errors.MissingDataError(
      f"{path}: no such file (a msgpack of pretrained weights, e.g. from python -m gs_jax.convert)"
    )
  with open(path, "rb") as f:
    try:
      loaded = traverse_util.flatten_dict(serialization.msgpack_restore(f.read()), sep="/")
    except Exception as e:  # msgpack's own errors: not a flax msgpack file
      raise errors.BadFileError(
        f"{path}: not a flax msgpack checkpoint ({type(e).__name__}: {e})"
      ) from e
  flat = traverse_util.flatten_dict(jax.device_get(variables), sep="/")
  out = {}
  for k, v in flat.items():
    is_head = "/head/" in f"/{k}"
    if k in loaded and jnp.shape(loaded[k]) == jnp.shape(v):
      out[k] = jnp.asarray(loaded[k], jnp.asarray(v).dtype)
    elif is_head:
      out[k] = v
    else:
      raise errors.BadFileError(f"{path}: {'shape mismatch for' if k in loaded else 'missing'} {k}")
  return traverse_util.unflatten_dict(out, sep="/")
