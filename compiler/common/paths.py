"""Files specc reads because a spec or a command line names them: regular files only, read with a bound.

``read_file`` is the one way in. For a path a spec names (``confine=True``: CSV ``path`` and
``test_path``) it refuses absolute paths and ``..``, then resolves the path with every symbolic link
followed (``os.path.realpath``) and refuses it unless it stays inside the folder specc runs in; a
spec (or a pull request that carries a symlink) cannot make specc read ``/proc/self/environ`` or
``/etc/passwd``. For every path it then refuses what is not a regular file -- a directory, a FIFO,
a device, a socket -- by ``os.stat`` before opening, opens with ``O_NONBLOCK`` (a FIFO that appeared
since cannot block the open) and checks again with ``fstat`` on the open descriptor, and reads at
most ``limit + 1`` bytes, whatever ``stat`` said the size was (``/dev/zero`` and ``/proc`` files
report 0).
"""

from __future__ import annotations

import os
import stat

_KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
    stat.S_IFLNK: "a symbolic link",
}
_CHUNK = 1 << 20
CSV_SCAN_BYTES = 16 << 20  # validation reads at most this much of a CSV file (its first rows)
CSV_MAX_COLUMNS = 100_000


class PathError(ValueError):
    """A path that specc will not read. ``kind`` is one of: outside, missing, not_regular, unreadable."""

    def __init__(self, kind: str, message: str, fix: str = ""):
        super().__init__(message)
        self.kind, self.message, self.fix = kind, message, fix


def file_kind(mode: int) -> str:
    """What a ``st_mode`` is, in words: 'a directory', 'a FIFO (named pipe)', ..."""
    return _KINDS.get(stat.S_IFMT(mode), "not a regular file")


def inside(path: str | os.PathLike, root: str | os.PathLike | None = None) -> bool:
    """Whether ``path``, with every symbolic link resolved, is ``root`` (default: the current folder) or below it."""
    base = os.path.realpath(root if root is not None else os.getcwd())
    real = os.path.realpath(path)
    return os.path.commonpath([base, real]) == base


def check_spelling(path: str) -> None:
    """Refuse an absolute path or one with ``..``: a spec's paths are relative to the folder specc runs in."""
    normalized = os.path.normpath(path)
    if os.path.isabs(path) or normalized == ".." or normalized.startswith(".." + os.sep):
        raise PathError(
            "outside", "leaves the folder specc runs in", "use a path relative to that folder, without '..'"
        )


def read_file(path: str | os.PathLike, *, limit: int, confine: bool = True) -> tuple[bytes, bool]:
    """At most ``limit`` bytes of the regular file at ``path``, and whether that is the whole file.

    Raises ``PathError`` (never another exception) for a path it will not read; its message does not
    start with the path, so callers can name the path the way their users wrote it.
    """
    try:
        name = os.fspath(path)
        if not isinstance(name, str):
            raise PathError("unreadable", "is not a text path", "write the path as text")
        if "\x00" in name:
            raise PathError("unreadable", "holds a NUL character", "remove it from the path")
        if confine:
            check_spelling(name)
            if not inside(name):
                raise PathError(
                    "outside",
                    "leaves the folder specc runs in (a symbolic link on the way points outside it)",
                    "copy the file into the project instead of linking to it",
                )
        real = os.path.realpath(name)
        try:
            info = os.stat(real)
        except (FileNotFoundError, NotADirectoryError):
            raise PathError("missing", "not found", "check the path") from None
        if not stat.S_ISREG(info.st_mode):
            raise PathError("not_regular", f"is {file_kind(info.st_mode)}, not a regular file", "name a regular file")
        flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0)
        fd = os.open(real, flags | getattr(os, "O_NOFOLLOW", 0))
        try:
            info = os.fstat(fd)  # what was opened, not what was there a moment ago
            if not stat.S_ISREG(info.st_mode):
                raise PathError(
                    "not_regular", f"is {file_kind(info.st_mode)}, not a regular file", "name a regular file"
                )
            chunks: list[bytes] = []
            left = limit + 1
            while left > 0:
                chunk = os.read(fd, min(_CHUNK, left))
                if not chunk:
                    break
                chunks.append(chunk)
                left -= len(chunk)
        finally:
            os.close(fd)
    except PathError:
        raise
    except (OSError, ValueError) as err:
        reason = getattr(err, "strerror", None) or type(err).__name__
        raise PathError("unreadable", f"cannot be read ({reason})", "check the path and its permissions") from None
    data = b"".join(chunks)
    return data[:limit], len(data) <= limit
