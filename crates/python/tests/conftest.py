"""Shared fixtures: the CLI binary the tests use as the oracle of "same bits", and the tiny model.

scripts/python-tests.sh builds both and sets LLM_AUCTION_CLI and LLM_AUCTION_TINY.
"""

import json
import os
import subprocess
from typing import Any, Dict, List

import pytest


def _env_path(name: str) -> str:
    p = os.environ.get(name)
    if not p or not os.path.exists(p):
        pytest.fail(f"{name} is not set to an existing file (run scripts/python-tests.sh)")
    return p


@pytest.fixture(scope="session")
def cli() -> str:
    return _env_path("LLM_AUCTION_CLI")


@pytest.fixture(scope="session")
def tiny_model() -> str:
    return _env_path("LLM_AUCTION_TINY")


def run_cli(cli: str, args: List[str], stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(
        [cli, "--quiet", *args], input=stdin, capture_output=True, text=True, timeout=600
    )


def cli_json(cli: str, args: List[str], stdin: str = "") -> Dict[str, Any]:
    out = run_cli(cli, args, stdin)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)
