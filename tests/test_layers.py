"""The import rule (gs_jax/__init__.py): a module imports only from its own layer or the layers
before it; configs import only ml_collections; experiments/analysis/benchmarks sit above the
package and are never imported by it. Parsed from the source, so lazy imports inside functions
count too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Lowest first. A module in LAYERS[i] may import gs_jax modules of LAYERS[0..i] only.
LAYERS = ("base", "nn", "theory", "data", "training", "tasks", "experiment")


def _imports(path: Path):
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      for alias in node.names:
        yield node.lineno, alias.name
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      yield node.lineno, node.module
      for alias in node.names:  # "from gs_jax import dual": the module is gs_jax.dual
        yield node.lineno, f"{node.module}.{alias.name}"


def _layer(module: str) -> str | None:
  parts = module.split(".")
  if parts[0] != "gs_jax" or len(parts) < 2:
    return None
  return parts[1] if parts[1] in LAYERS else "?" + parts[1]


def _package_modules():
  return sorted(p for p in (ROOT / "gs_jax").rglob("*.py") if p.parent != ROOT / "gs_jax")


@pytest.mark.parametrize("path", _package_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_package_imports_go_downward(path):
  own = path.relative_to(ROOT / "gs_jax").parts[0]
  assert own in LAYERS, f"{path}: folder {own!r} is not a layer of {LAYERS}"
  bad = []
  for line, module in _imports(path):
    if module.split(".")[0] in ("experiments", "analysis", "benchmarks", "configs", "tests"):
      bad.append(f"line {line}: {module} (above the package)")
      continue
    layer = _layer(module)
    if layer is None:
      continue
    if layer.startswith("?"):  # a flat alias (gs_jax.dual …): fine for users, not inside
      bad.append(f"line {line}: {module} (flat alias; import the layered module)")
    elif LAYERS.index(layer) > LAYERS.index(own):
      bad.append(f"line {line}: {module} ({layer} is above {own})")
  assert not bad, f"{path.relative_to(ROOT)} imports upward:\n  " + "\n  ".join(bad)


def test_top_level_holds_only_the_alias_table():
  flat = sorted(p.name for p in (ROOT / "gs_jax").glob("*.py"))
  assert flat == ["__init__.py"], f"modules outside a layer folder: {flat}"


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.py")), ids=lambda p: p.name)
def test_configs_are_data(path):
  """Reading a config must not load JAX: configs import ml_collections (and each other)."""
  allowed = ("ml_collections", "__future__", "configs")
  bad = [f"line {line}: {m}" for line, m in _imports(path) if m.split(".")[0] not in allowed]
  assert not bad, f"{path.name} imports more than ml_collections:\n  " + "\n  ".join(bad)


def test_flat_aliases_are_the_layered_modules():
  import gs_jax
  from gs_jax import dual
  from gs_jax.theory import dual as layered

  assert dual is layered
  import gs_jax.train  # noqa: F401 (the old training module's name)
  from gs_jax import training

  assert gs_jax.train is training and gs_jax.train.fit_minibatch is training.fit_minibatch
  for name, target in gs_jax._ALIASES.items():
    assert getattr(gs_jax, name).__name__ == target
