"""What a test needs from the machine: a skip when it is missing here, a failure under CI.

CI installs every external component the suite uses (``.ci/run``: apt and pip), so a missing one
there is a broken set-up, never a reason to pass quietly.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def in_ci() -> bool:
    """True on CI (``CI`` set, and not ``0``/``false``/``no``)."""
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def missing(message: str) -> NoReturn:
    """Stop the test: ``pytest.fail`` on CI (:func:`in_ci`), else ``pytest.skip``, with ``message``."""
    if in_ci():
        pytest.fail(message)
    pytest.skip(message)
