"""Private files of Mission Control: the state directory is 0700; the database (and its -wal and
-shm), the token key and the operator token are 0600 — created so, and tightened at start (with a
warning) when someone loosened them."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger("mcos.files")
DIR_MODE = 0o700
FILE_MODE = 0o600
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


def _tighten(path: Path, mode: int) -> None:
    current = stat.S_IMODE(path.stat().st_mode)
    if current & 0o077:
        log.warning("%s was mode %s, readable by others: set to %s", path, oct(current), oct(mode))
        path.chmod(mode)


def private_dir(path: Path) -> Path:
    """Create ``path`` as 0700, or tighten it to 0700 if group or others could enter it."""
    if not path.exists():
        path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        path.chmod(DIR_MODE)  # mkdir's mode is masked by the umask
    _tighten(path, DIR_MODE)
    return path


def private_file(path: Path) -> None:
    """Tighten an existing file to 0600 if group or others could read it (absent: nothing)."""
    if path.exists():
        _tighten(path, FILE_MODE)


def private_database(path: Path) -> None:
    """A SQLite database file created 0600 (SQLite gives its -wal and -shm the database's
    mode), or an existing one and its side files tightened to 0600."""
    if not path.parent.exists():
        private_dir(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        pass
    else:
        os.close(fd)
    for suffix in ("", *SQLITE_SIDE_FILES):
        private_file(Path(f"{path}{suffix}"))
