"""Numbered output file names (`loom_00001_.png`) from a counter kept per folder and prefix, in a small
SQLite index in the data folder (`counters.sqlite3`), so saving an image never lists its folder.

The counter has no upper limit (`_99999_` is followed by `_100000_`). A file is created exclusively
('xb'), so a name taken by someone else (another tool, a copied file) is never overwritten: the folder
is then listed once to find its highest number, and counting goes on from there. Listing also
happens once when a prefix is first used in a folder that already holds its first name (files from
before the index, or a deleted index); a new prefix costs one `stat`.

Processes sharing a data folder (the server, `server.py run`) take numbers from the same index, so
their names never clash either.
"""
from __future__ import annotations

import atexit
import sqlite3
import threading
import time
from pathlib import Path
from typing import BinaryIO

SCHEMA = """
CREATE TABLE IF NOT EXISTS counters (
    folder TEXT NOT NULL,
    prefix TEXT NOT NULL,
    suffix TEXT NOT NULL,
    next INTEGER NOT NULL,
    used REAL NOT NULL,
    PRIMARY KEY (folder, prefix, suffix)
);
CREATE INDEX IF NOT EXISTS counters_used ON counters (used);
"""
MAX_ROWS = 10_000  # prefixes remembered; the least recently used beyond are found again by `stat`/listing


class NameCounter:
    """The next free number of `prefix + digits + suffix` names per folder, kept in SQLite file `path`."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # a lost update is caught by the exclusive create
        self._db.executescript(SCHEMA)
        self._new_rows = 0

    def create(self, folder: str | Path, prefix: str, suffix: str, width: int = 5) -> tuple[Path, BinaryIO]:
        """Create the next free `prefix + number + suffix` file in `folder` (number zero-padded to
        `width`) and return its path and the file, open for writing."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        floor = 0
        while True:
            number = self._reserve(folder, prefix, suffix, width, floor)
            path = folder / f"{prefix}{number:0{width}d}{suffix}"
            try:
                return path, open(path, "xb")
            except FileExistsError:  # written outside the index: count on from the folder's highest
                floor = max(number, highest(folder, prefix, suffix))

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _reserve(self, folder: Path, prefix: str, suffix: str, width: int, floor: int) -> int:
        key = (str(folder.resolve()), prefix, suffix)
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute("SELECT next FROM counters WHERE folder=? AND prefix=? AND suffix=?",
                                       key).fetchone()
                if row is None:
                    first = folder / f"{prefix}{1:0{width}d}{suffix}"
                    number = highest(folder, prefix, suffix) + 1 if first.exists() else 1
                    self._new_rows += 1
                else:
                    number = row[0]
                number = max(number, floor + 1)
                self._db.execute("INSERT INTO counters (folder, prefix, suffix, next, used) VALUES (?, ?, ?, ?, ?) "
                                 "ON CONFLICT(folder, prefix, suffix) DO UPDATE SET next=excluded.next, "
                                 "used=excluded.used", (*key, number + 1, time.time()))
                if self._new_rows >= 1000:
                    self._prune()
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            return number

    def _prune(self) -> None:
        """Forget the least recently used prefixes beyond MAX_ROWS (e.g. one-off random preview names)."""
        self._new_rows = 0
        self._db.execute("DELETE FROM counters WHERE rowid IN (SELECT rowid FROM counters ORDER BY used DESC "
                         "LIMIT -1 OFFSET ?)", (MAX_ROWS,))


def highest(folder: Path, prefix: str, suffix: str) -> int:
    """The highest number of a `prefix + digits + suffix` file in `folder`, 0 if none (lists it)."""
    top = 0
    try:
        names = [p.name for p in folder.iterdir()]
    except FileNotFoundError:
        return 0
    for name in names:
        if name.startswith(prefix) and name.endswith(suffix) and len(name) > len(prefix) + len(suffix):
            digits = name[len(prefix):len(name) - len(suffix)]
            if digits.isascii() and digits.isdigit():  # e.g. not loom_cat_00001_.png for the prefix loom_
                top = max(top, int(digits))
    return top


_counters: dict[Path, NameCounter] = {}
_counters_lock = threading.Lock()


def name_counter(data_dir: str | Path) -> NameCounter:
    """The shared counter of a data folder (one connection per process)."""
    path = Path(data_dir).resolve() / "counters.sqlite3"
    with _counters_lock:
        if path not in _counters:
            _counters[path] = NameCounter(path)
        return _counters[path]


@atexit.register
def close_counters() -> None:
    """Close every counter's connection (SQLite then folds its write-ahead log into the file); at exit,
    also when the command line ends the process without the interpreter's teardown."""
    with _counters_lock:
        counters = list(_counters.values())
        _counters.clear()
    for counter in counters:
        counter.close()
