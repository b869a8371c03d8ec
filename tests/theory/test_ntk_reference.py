"""Our empirical NTK against neural-tangents' ``empirical_ntk_fn`` (an independent reference).

neural-tangents 0.6.5 (its last release) imports only on JAX < 0.6, so these tests run on the
oldest stack (``make test-oldest``, constraints/oldest.txt, the ``nt`` extra) and skip with the
reason elsewhere. Models: the MLP family (two-moons, Colored MNIST), a CNN with convolutions
(the cpu CIFAR VGG) and the released CIFAR-2 NarLeNet — the models whose kernels the
experiments use. Tolerance: float32 models, entries of K up to ~1e3; the two backends sum the
same products in different orders, so they agree to a few float32 ulps of the largest entry
(rtol 1e-5 of max |K|, asserted).
"""

import jax
import numpy as np
import pytest

from gs_jax.base import _compat
from gs_jax.nn import models
from gs_jax.theory import ntk

nt = pytest.importorskip(
  "neural_tangents",
  reason=f"neural-tangents is not installed (the optional 'nt' extra; it needs jax < 0.6, "
  f"this is jax {jax.__version__}): run the oldest stack, make test-oldest",
)


def _mlp():
  model = models.MLP(hidden=(64, 64), kernel_init="torch")
  x = jax.random.normal(jax.random.PRNGKey(0), (12, 5))
  return model, x


def _cnn():
  model = models.cifar_model("cpu", num_classes=2)
  x = jax.random.uniform(jax.random.PRNGKey(0), (6, 32, 32, 3), minval=-1, maxval=1)
  return model, x


def _narlenet():
  model = models.NarLeNet(num_classes=2)
  x = jax.random.uniform(jax.random.PRNGKey(0), (6, 32, 32, 3), minval=-1, maxval=1)
  return model, x


@pytest.mark.parametrize("build", [_mlp, _cnn, _narlenet], ids=["mlp", "cnn", "narlenet"])
@pytest.mark.parametrize("impl", ntk.IMPLEMENTATIONS)
def test_our_gram_equals_neural_tangents(build, impl):
  model, x = build()
  variables = model.init(jax.random.PRNGKey(1), x)
  params = variables["params"]
  rest = {k: v for k, v in variables.items() if k != "params"}

  apply = lambda p, xx: model.apply({"params": p, **rest}, xx)
  if jax.eval_shape(apply, params, x).ndim == 2:  # two logits: the scalar ŷ = f_1 − f_0
    apply = ntk.logit_difference(apply)

  K_ours = ntk.empirical_ntk(apply, params, x, implementation=impl, block_size=4)
  K_nt = ntk.empirical_ntk(
    apply, params, x, implementation=impl, block_size=4, backend="neural_tangents"
  )
  scale = np.max(np.abs(K_nt))
  assert scale > 0
  np.testing.assert_allclose(K_ours, K_nt, rtol=0, atol=1e-5 * scale)
  assert _compat.JAX_VERSION < (0, 6)
