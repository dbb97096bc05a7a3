"""Who may read the data directory: its owner only, unless its owner opens it to a group.

Recorded prompts and answers are private: llm-shadow creates the data directory 0700, and every
directory (0700) and file (0600) in it readable by its owner only, whatever the umask. To let a
group read (analysts beside the proxy's own user), give the data directory the group's bits,
e.g. `chgrp analysts DATA && chmod 2750 DATA` (setgid: new files keep the group): from then
on every directory is created with the data directory's group bits (0750) and every file with
them less execute (0640). Other users never get a bit.
"""

import os
import stat
from pathlib import Path

OWNER_DIR = 0o700
OWNER_FILE = 0o600


def _data_dir_of(path: Path) -> Path:
    """The data directory a path lies in: the nearest parent holding meta.json or salt."""
    for parent in path.parents:
        if (parent / "meta.json").exists() or (parent / "salt").exists():
            return parent
    return path.parent


def modes(data_dir: Path) -> tuple[int, int]:
    """(directory mode, file mode) for what is created in `data_dir` (see the module docstring)."""
    try:
        group = stat.S_IMODE(os.stat(data_dir).st_mode) & 0o070
    except OSError:
        group = 0
    return OWNER_DIR | group, OWNER_FILE | (group & 0o060)


def make_dir(path: Path, data_dir: Path | None = None) -> None:
    """mkdir -p `path` with the data directory's modes (an existing directory is left alone):
    `path` and every parent created for it inside the data directory."""
    if path.is_dir():
        return
    home = data_dir if data_dir is not None else _data_dir_of(path)
    dir_mode, _ = modes(home)
    missing = [path, *(p for p in path.parents if not p.exists())]
    for directory in reversed(missing):
        directory.mkdir(exist_ok=True)
        if directory == path or directory.is_relative_to(home):
            os.chmod(directory, dir_mode)


def restrict(path: Path, data_dir: Path | None = None) -> None:
    """Give a file written by a library (Parquet, JSON) the data directory's file mode."""
    _, file_mode = modes(data_dir if data_dir is not None else _data_dir_of(path))
    os.chmod(path, file_mode)


def create_private_file(path: Path, data: bytes, data_dir: Path | None = None) -> None:
    """Write `data` to `path` (replaced if present), created with the data directory's file mode."""
    _, file_mode = modes(data_dir if data_dir is not None else _data_dir_of(path))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, file_mode)
    try:
        os.fchmod(fd, file_mode)  # an existing file keeps its mode otherwise
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
