"""README.md's code examples run as written."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
RUNNABLE = [b for b in BLOCKS if "MySVGP" not in b]  # the trainer sketch names a user's own class


@pytest.mark.parametrize("code", RUNNABLE, ids=[f"block{i}" for i in range(len(RUNNABLE))])
def test_readme_example_runs(code):
    exec(compile(code, str(README), "exec"), {})


def test_readme_has_the_two_commands():
    text = README.read_text()
    assert re.search(r"^python3 -m venv .venv && .*gpkit demo$", text, flags=re.M)
    assert re.search(r"^python3 -m venv .venv && .*pytest$", text, flags=re.M)
