"""Airflow operators that run recipe steps, one class per execution mechanism.

* :class:`~.native.StepcabNativeOperator` — a local process on the worker (Stimela ``native``).

All share :class:`~.base.StepcabBaseOperator` (run-time resolution of the step, trigger-time
overrides, XCom and Asset outputs). Exports are lazy so that importing the pure helpers
(:mod:`.resolve`, :mod:`.overrides`) does not pull in every mechanism.
"""

from __future__ import annotations

from typing import Any

__all__ = ["StepcabBaseOperator", "StepcabNativeOperator", "XCOM_PARAMS_KEY", "register_backend_runner"]

_WHERE = {"StepcabBaseOperator": "base", "XCOM_PARAMS_KEY": "registry", "register_backend_runner": "registry",
          "StepcabNativeOperator": "native"}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
