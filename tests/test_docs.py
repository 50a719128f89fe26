"""The README says what the code does: its exit-code table is the ExitCode enum's, and its
scenario table lists every sandbox scenario."""

from __future__ import annotations

import re

from cutover.exitcodes import ExitCode
from cutover.sandbox.scenarios import SCENARIOS
from tests.conftest import ROOT

README = (ROOT / "README.md").read_text()


def test_the_readme_exit_code_table_is_the_enums():
    block = README.split("<!-- exit-codes:", 1)[1]
    rows = re.findall(r"^\| (\d) \| (.+?) \|$", block, flags=re.M)[:len(ExitCode)]
    assert [(int(code), meaning) for code, meaning in rows] == [(int(c), c.meaning) for c in ExitCode]


def test_the_readme_lists_every_sandbox_scenario():
    listed = set(re.findall(r"^\| `([a-z-]+)`(?: \(default\))? \|", README, flags=re.M))
    assert set(SCENARIOS) <= listed, set(SCENARIOS) - listed


def test_the_readme_points_nowhere_outside_the_repository():
    assert "../shared" not in README
    for link in re.findall(r"\]\(([^)#]+)\)", README):
        if not link.startswith("http"):
            assert (ROOT / link).exists(), link
