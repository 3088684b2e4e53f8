"""One output folder, one model: a sweep into an ``--out`` that holds another model's sweep is refused.

``OUT/.model.json`` records the sha256 and path of the model swept there. The same model resumes as always;
another model would replace its ``plan.json`` and mix two models in one journal, so it stops with one line
(exit code 2). Folders written before this record existed are recognised by their ``result.json``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from precision_lab.errors import InputError
from precision_lab.io import write_text_atomic

__all__ = ["prepare_out_dir", "claim_out_dir", "MODEL_RECORD"]

MODEL_RECORD = ".model.json"


def _recorded(out: Path) -> dict | None:
    for name, key in ((MODEL_RECORD, None), ("result.json", "model")):
        try:
            data = json.loads((out / name).read_text())
        except (OSError, ValueError):
            continue
        data = data.get(key) if key else data
        if isinstance(data, dict) and isinstance(data.get("sha256"), str):
            return data
    return None


def prepare_out_dir(out: Path) -> Path:
    """Create ``out`` and its ``cache`` folder; one-line :class:`InputError` when ``out`` is a file or cannot be
    created."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file; give a folder for the outputs")
    try:
        (out / "cache").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the output folder {out} ({exc.strerror}); choose another --out") from exc
    return out


def claim_out_dir(out: str | os.PathLike, model: str | os.PathLike, sha256: str) -> None:
    """Record that ``out`` holds the sweep of ``model`` (file hash ``sha256``); raise :class:`InputError` when
    it holds another model's."""
    out = Path(out)
    recorded = _recorded(out)
    if recorded is not None and recorded["sha256"] != sha256:
        raise InputError(
            f"--out {out} holds the sweep of another model ({recorded.get('path', '?')}, sha256 "
            f"{recorded['sha256'][:12]}); give {model} its own --out folder, or delete {out} to start over"
        )
    if recorded is None or not (out / MODEL_RECORD).exists():
        write_text_atomic(out / MODEL_RECORD, json.dumps({"path": str(model), "sha256": sha256}) + "\n")
