"""Importing the user's own code: a function named ``module:function`` or ``path/to/file.py:function``.

Used for custom metrics and data loader scripts. **This runs the user's code** with the user's permissions.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path

from precision_lab.errors import InputError

__all__ = ["load_function"]


def load_function(spec: str, *, what: str, default_function: str | None = None) -> Callable:
    """The callable named by ``spec`` (``module:function``, ``file.py:function``, or ``file.py`` alone when
    ``default_function`` is given). ``what`` names it in the one-line errors (e.g. "custom metric")."""
    if spec.endswith(".py") and default_function:
        module_name, function = spec, default_function
    else:
        module_name, _, function = spec.rpartition(":")
    if not module_name or not function:
        raise InputError(f"{what} '{spec}': give module:function or file.py:function")
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            if not path.is_file():
                raise InputError(f"{what} file not found: {path}")
            module_spec = importlib.util.spec_from_file_location(f"precision_lab_user_{path.stem}", path)
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[module_spec.name] = module
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"{what} {module_name} failed to import ({type(exc).__name__}: {exc})") from exc
    found = getattr(module, function, None)
    if found is None:
        raise InputError(f"{what} {module_name} has no function '{function}'; name it with {module_name}:FUNCTION")
    if not callable(found):
        raise InputError(f"{what} '{spec}' is not callable")
    return found
