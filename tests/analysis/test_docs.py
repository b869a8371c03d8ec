"""README.md and docs/**/*.md are generated from docs/results (analysis/docs.py, `make docs`):
regenerating gives exactly the committed text, and a number changed by hand, in a results file
or in the markdown, makes the check fail."""

import json
import shutil

import pytest

from analysis import docs

PAGE = docs.ROOT / "docs" / "experiments" / "colored_mnist.md"


def test_every_generated_block_equals_what_the_results_files_give():
  built = docs.build()
  assert docs.ROOT / "README.md" in built
  stale = [f.relative_to(docs.ROOT).as_posix() for f, (old, new) in built.items() if old != new]
  assert not stale, f"stale generated blocks in {stale}: run `make docs` and commit"


def test_every_block_is_used_and_names_its_sources():
  text = "".join(f.read_text() for f in docs.doc_files())
  used = {m.group("name") for m in docs.MARKER.finditer(text)}
  assert set(docs.BLOCKS) <= used, f"blocks no page uses: {set(docs.BLOCKS) - used}"
  for name in docs.BLOCKS:
    if name != "readme.reproduce":
      assert "Source: `docs/results/" in docs.BLOCKS[name](docs.ROOT / "docs" / "results"), name


def _copy_results(tmp_path):
  """The files behind PAGE, in a results folder of their own."""
  src = docs.ROOT / "docs" / "results"
  dst = tmp_path / "results"
  for folder in ("colored_mnist_h200", "colored_mnist_cpu"):
    shutil.copytree(src / folder, dst / folder)
  shutil.copy(src / "LEGACY.json", dst / "LEGACY.json")
  return dst


def test_a_number_changed_in_a_results_file_fails_the_check(tmp_path):
  results = _copy_results(tmp_path)
  committed = PAGE.read_text()
  assert docs.render(committed, results) == committed  # the copy gives the same page
  path = results / "colored_mnist_h200" / "sd" / "results.json"
  res = json.loads(path.read_text())
  res["restarts"][0]["test_acc"] -= 0.05  # one restart, 5 points lower
  path.write_text(json.dumps(res))
  changed = docs.render(committed, results)
  assert changed != committed
  old = [line for line in committed.splitlines() if line.startswith("| SD | 10 |")]
  new = [line for line in changed.splitlines() if line.startswith("| SD | 10 |")]
  assert old and new and old != new, (old, new)


def test_a_number_changed_in_the_markdown_fails_the_check():
  committed = PAGE.read_text()
  row = next(line for line in committed.splitlines() if line.startswith("| SD | 10 |"))
  edited = committed.replace(row, row.replace("67.8", "68.8", 1))
  assert edited != committed
  assert docs.render(edited, docs.ROOT / "docs" / "results") == committed  # make docs undoes it


def test_inline_numbers_stay_inline_and_unknown_blocks_fail():
  results = docs.ROOT / "docs" / "results"
  line = (
    "within <!-- generated:colored_mnist.fact.max_test_sd -->9<!-- "
    "/generated:colored_mnist.fact.max_test_sd --> paper standard deviations"
  )
  out = docs.render(line, results)
  assert "\n" not in out and "-->9<!--" not in out
  with pytest.raises(KeyError, match="nope"):
    docs.render("<!-- generated:nope -->\n<!-- /generated:nope -->", results)
