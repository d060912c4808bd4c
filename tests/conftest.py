"""Shared test setup.

- Markers: `slow` (browser, AppTest journeys, subprocesses, torchrun, trainer processes) and
  `browser`. `python -m pytest -m "not slow"` is the quick inner loop; CI runs everything.
- In CI (`CI=true`), a browser test that cannot start Chromium fails instead of skipping, so a
  green CI always includes the browser tests.
- `lib_helpers` (tiny random models) and `browser_helpers` are importable because pyproject.toml
  puts tests/ on the pytest pythonpath.
- Browser fixtures: `app_url` (a server of the module's own: the module's `APP_ENV` adds
  environment, its log is artifacts/streamlit-<module>.log) and `browser` (Chromium), both per module.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

# Whole modules that start servers, browsers, subprocesses or child trainers, or run AppTest
# journeys: marked slow here, in one place, rather than test by test.
SLOW_MODULES = {
    "test_browser",
    "test_browser_live",
    "test_app",
    "test_app_inside",
    "test_app_links",
    "test_mdn_app",
    "test_regression_app",
    "test_trainer_process",
    "test_cli",
    "test_cli_inspect",
    "test_safety_process",
    "test_devices",
    "test_app_matrix",
    "test_browser_figures",
    "test_app_data",
    "test_browser_data",
}


if os.environ.get("PYTEST_XDIST_WORKER"):
    # Two pytest workers share the cores (`-n 2`): one torch thread each, not two each fighting
    # over two cores (oversubscribed torch threads spin and slow everything down).
    import torch

    torch.set_num_threads(1)


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.module is not None and item.module.__name__.rpartition(".")[2] in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)


def skip_or_fail(reason: str) -> None:
    """A missing prerequisite of a browser test: a skip on a developer's machine, a failure in CI."""
    if in_ci():
        pytest.fail(f"CI=true and the browser tests cannot run: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def app_url(request: pytest.FixtureRequest) -> Iterator[str]:
    from browser_helpers import served_app

    name = request.module.__name__.rpartition(".")[2]
    with served_app(f"streamlit-{name}.log", env=getattr(request.module, "APP_ENV", None)) as url:
        yield url


@pytest.fixture(scope="module")
def browser(app_url: str) -> Iterator[object]:
    from browser_helpers import chromium

    with chromium() as b:
        yield b
