"""The pytest plugin, registered through the ``pytest11`` entry point. Hooks only.

Without ``--shrink-method`` it only declares its settings and the researcher's fixtures (:mod:`.testing`);
with it, :func:`.session.start` builds the session's objects (the benchmark on every process, the recorder
on the controller) and they do the rest.
"""

from __future__ import annotations

import pytest

from .session import start
from .settings import add_options

pytest_plugins = ["pytest_shrinkbench.plugin.fixtures", "pytest_shrinkbench.plugin.testing"]


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("shrink_method"):
        start(config)
