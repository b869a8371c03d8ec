"""The paper's reported numbers (Pezeshki et al., NeurIPS 2021), in one place.

Values are ``(mean, std)`` in percent over the paper's runs (10 each), ``None`` where the paper
reports none; sources are docs/protocols.md §3.3–3.5 (which cite the paper's tables/figures).
Tables and analysis modules print these beside our measurements.
"""

from __future__ import annotations

# Table 1 (docs/protocols.md §3.3): train / test IID / test OOD (PGD, ε = 0.05).
TABLE1 = {
  ("cifar2", "erm"): {"train": (100.0, None), "iid": (95.2, 0.12), "ood": (42.3, 3.0)},
  ("cifar2", "sd"): {"train": (100.0, None), "iid": (95.3, 0.17), "ood": (69.7, 2.9)},
  ("cifar10", "erm"): {"train": (99.9, None), "iid": (92.8, 0.15), "ood": (30.1, 2.1)},
  ("cifar10", "sd"): {"train": (99.9, None), "iid": (92.9, 0.16), "ood": (67.7, 1.5)},
  ("cifar100", "erm"): {"train": (99.7, None), "iid": (69.2, 0.29), "ood": (14.3, 2.0)},
  ("cifar100", "sd"): {"train": (99.7, None), "iid": (70.5, 0.26), "ood": (24.9, 1.9)},
}

# Table 2 (docs/protocols.md §3.4): Colored MNIST train / test accuracy; optimum 75%.
TABLE2 = {
  "erm": {"train": (91.1, 0.4), "test": (23.7, 0.8)},
  "rex": {"train": (71.5, 1.0), "test": (68.7, 0.9)},
  "irm": {"train": (70.5, 0.6), "test": (67.1, 1.4)},
  "sd": {"train": (70.0, 0.9), "test": (68.4, 1.2)},
  "oracle": {"train": (73.5, 0.2), "test": (73.0, 0.4)},
}
TABLE2_OPTIMUM = 75.0

# Figure 3 (docs/protocols.md §3.4): (accuracy %, mean binary entropy) on test variants.
FIGURE3 = {
  "erm": {"color_blank": (9.4, 0.00), "color_digits": (23.9, None)},
  "sd": {"color_blank": (9.4, 0.41), "color_digits": (67.2, None)},
  "irm": {"color_blank": (49.6, None), "color_digits": (None, None)},
}

# Table 3 (docs/protocols.md §3.5): CelebA average / worst-group test accuracy.
TABLE3 = {
  "erm": {"average": (94.61, 0.67), "worst_group": (40.35, 1.68)},
  "sd": {"average": (91.64, 0.61), "worst_group": (83.24, 2.01)},
  "lff": {"average": None, "worst_group": (81.24, 1.38)},
  "group_dro": {"average": (91.76, 0.28), "worst_group": (87.78, 0.96)},
}


def fmt(value) -> str:
  """``"95.2 ± 0.12"``, ``"100.0"`` or ``"–"`` for a ``(mean, std)`` entry."""
  if value is None or value[0] is None:
    return "–"
  mean, std = value
  return f"{mean}" if std is None else f"{mean} ± {std}"
