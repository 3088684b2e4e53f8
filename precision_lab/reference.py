"""FP32 reference outputs, computed once per model and evaluation set, kept on disk and read lazily.

Each sample's outputs are ``.npy`` files memory-mapped on access, so neither the sweep nor its workers hold
the whole reference in memory; a :class:`ReferenceStore` pickles as its folder path.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from precision_lab.data import Feed

__all__ = ["ReferenceStore", "build_reference"]

_COMPLETE = "complete.json"


class ReferenceStore(Sequence):
    """Reference outputs of ``count`` samples in ``folder`` (``<sample>_<output index>.npy`` + an index)."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        index = json.loads((self.folder / _COMPLETE).read_text())
        self.count: int = index["count"]
        self.names: list[str] = index["names"]

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self.count))]
        if not -self.count <= i < self.count:
            raise IndexError(i)
        i %= self.count
        return {name: np.load(self.folder / f"{i}_{k}.npy", mmap_mode="r") for k, name in enumerate(self.names)}

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return (self[i] for i in range(self.count))


def build_reference(run, feeds: Sequence[Feed], folder: str | os.PathLike) -> ReferenceStore:
    """The store in ``folder``, computing it first if absent: ``run(feeds, on_output)`` must call
    ``on_output(i, outputs)`` for each feed (see :meth:`Backend.run`). Written atomically (temp folder, rename)."""
    folder = Path(folder)
    if (folder / _COMPLETE).exists():
        return ReferenceStore(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    names: list[str] = []

    def keep(i: int, outputs: Mapping[str, np.ndarray]) -> None:
        if not names:
            names.extend(outputs)
        for k, name in enumerate(names):
            np.save(tmp / f"{i}_{k}.npy", np.asarray(outputs[name]))

    try:
        run(feeds, keep)
        (tmp / _COMPLETE).write_text(json.dumps({"count": len(feeds), "names": names}))
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return ReferenceStore(folder)
