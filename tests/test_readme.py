"""README.md's code examples run as written."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_every_python_block_is_found():
    # a block indented inside a list would not run as pasted: keep every python block at the top level
    assert len(BLOCKS) == README.read_text().count("```python")
    assert all(not b.startswith(" ") for b in BLOCKS)


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_example_runs(code):
    exec(compile(code, str(README), "exec"), {})


def test_readme_has_the_two_commands():
    text = README.read_text()
    assert re.search(r"^python3 -m venv .venv && .*gpkit demo$", text, flags=re.M)
    assert re.search(r"^python3 -m venv .venv && .*pytest$", text, flags=re.M)
