from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from llama_serve import testmodels
from serverproc import ServerProcess

ROOT = Path(__file__).resolve().parent.parent
# The installed package finds llama.cpp's vocabularies here (beyond the one it ships); child processes inherit it.
os.environ.setdefault("LLAMA_CPP_SOURCE_DIR", str(ROOT / "vendor" / "llama.cpp"))


@pytest.fixture(scope="session")
def deterministic_model() -> Path:
    return testmodels.deterministic()


@pytest.fixture(scope="session")
def random_model() -> Path:
    return testmodels.tiny_random()


@pytest.fixture(scope="session")
def deterministic_server(deterministic_model: Path) -> Iterator[ServerProcess]:
    with ServerProcess("-m", str(deterministic_model), "-c", "1024", "-np", "2", "--alias", "det") as srv:
        srv.wait_healthy()
        yield srv
