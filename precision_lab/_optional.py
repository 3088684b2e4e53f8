"""Lazy imports of optional heavy packages, with an error that names the pip extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

from precision_lab.errors import MissingDependencyError


def require(module: str, extra: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError` naming ``pip install precision-lab[extra]``."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"'{module}' is not installed ({exc}); install it with: pip install 'precision-lab[{extra}]'"
        ) from exc
