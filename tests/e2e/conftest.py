"""Fixtures the end-to-end tests share."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from candor_cli import LocalStack


@pytest.fixture(scope="module")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """A local stack with the default settings, one for each test module that asks for it."""
    stack = LocalStack(tmp_path_factory.mktemp("local-stack"))
    stack.up()
    yield stack
    stack.down()
