from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    """A private copy of config/ that a test may edit or break."""
    dst = tmp_path / "config"
    shutil.copytree(ROOT / "config", dst)
    return dst


def use_strategy(config_dir: Path, strategy: str, env: str = "production") -> None:
    """Rewrite `service.deployment` of a config copy: the engine tests on moto play rolling
    deployments (moto has no service deployments); the canary tests script them."""
    import re

    path = config_dir / f"{env}.yaml"
    text = path.read_text()
    block = "  deployment:\n    strategy: rolling\n" if strategy == "rolling" else None
    assert block, "only rolling is rewritten here"
    path.write_text(re.sub(r"  deployment:\n(?:    .*\n|\s*#.*\n)+", block, text, count=1))
