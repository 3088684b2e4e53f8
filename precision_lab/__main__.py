"""``python -m precision_lab`` is the ``precision-lab`` command."""

from precision_lab.cli import entry_point

entry_point()
