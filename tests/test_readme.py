"""The README's promises: the two commands up top, and the copyable entry equals the example."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_starts_with_setup_and_test_commands() -> None:
    text = (ROOT / "README.md").read_text()
    first_block = re.search(r"```bash\n(.*?)```", text, re.S).group(1).strip().splitlines()
    assert "pip install torch==2.13.0" in first_block[0] and "python -m benchmark run --task pastis_r" in first_block[0]
    assert first_block[1].startswith("python -m pytest")
    ci = (ROOT / ".ci/run").read_text()
    assert "python -m pytest -q" in ci and "torch==2.13.0" in ci


def test_readme_entry_is_the_example_file() -> None:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    assert block == (ROOT / "examples/minimal_entry.py").read_text()
