"""The results journal: one JSON line per finished evaluation, appended and flushed as it finishes.

A sweep re-run on the same output folder reads it back and skips every evaluation it holds, so an
interruption at any point loses at most the evaluation that was running. A last line cut short by a crash
is dropped (and the file repaired) on open.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["Journal", "JOURNAL_NAME", "JOURNAL_FORMAT"]

JOURNAL_NAME = "journal.jsonl"
JOURNAL_FORMAT = 2  # 2: records carry per-sample statistics ("samples"); 1 (no "format" key): aggregates only


class Journal:
    """Append-only JSON-lines file of evaluation records, indexed by ``key``.

    ``resume=False`` moves an existing journal aside (``journal.jsonl.old``) and starts empty.
    """

    def __init__(self, path: str | os.PathLike, *, resume: bool = True) -> None:
        self.path = Path(path)
        self.records: dict[str, dict] = {}
        self.repaired = False
        self.outdated = 0  # records of an older format (no per-sample statistics)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() and not resume:
            os.replace(self.path, self.path.with_name(self.path.name + ".old"))
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        raw = self.path.read_bytes()
        good_end = 0
        for line in raw.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break
            try:
                record = json.loads(line)
            except ValueError:
                break
            good_end += len(line)
            if isinstance(record, dict) and "key" in record:
                self.records[record["key"]] = record
                self.outdated += record.get("format", 1) < JOURNAL_FORMAT
        if good_end != len(raw):
            self.repaired = True
            with open(self.path, "r+b") as handle:
                handle.truncate(good_end)

    def __contains__(self, key: str) -> bool:
        return key in self.records

    def get(self, key: str) -> dict | None:
        return self.records.get(key)

    def append(self, record: dict) -> None:
        """Write ``record`` (which has a ``key``) as one line, flushed and fsynced before returning."""
        line = json.dumps(record, sort_keys=True) + "\n"
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
        self.records[record["key"]] = record
