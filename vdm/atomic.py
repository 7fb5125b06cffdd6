"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Everything that writes a result the user keeps (videos, checkpoints, manifests) goes through here.
The recipe: write to a temporary file in the *same directory* (so `os.replace` is a rename on one
filesystem, which POSIX makes atomic), flush it to disk, then rename it over the target. If anything
fails, the temporary file is removed and a previous file at the target is left untouched.

A process killed mid-write (kill -9, power loss) cannot remove its temporary file, so temporary names
carry the writer's process id, and the next write to the same target removes the ones whose writer
is gone (remove_stale): an interrupted run leaves nothing behind once the file is written again.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from vdm.errors import VdmError


def _read_umask() -> int:
    # os.umask can only be read by setting it; do it once at import, before any threads write files.
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable. Best effort: some filesystems cannot open a directory."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def writer_prefix(name: str, tag: str) -> str:
    """The start of a temporary name for `name`, tagged with this process's id: '<name>.<tag>-<pid>-'."""
    return f"{name}.{tag}-{os.getpid()}-"


def _writer_alive(entry: str, tag: str) -> bool:
    match = re.search(rf"\.{re.escape(tag)}-(\d+)-", entry)
    if match is None:
        return False  # a name from before writers were tagged: nobody is writing it any more
    pid = int(match[1])
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale(folder: Path, pattern: str, tag: str) -> list[Path]:
    """Remove the entries of `folder` matching `pattern` (files or folders) that a writer tagged `tag`
    left behind and whose process is gone; return them."""
    removed = []
    for entry in folder.glob(pattern):
        if _writer_alive(entry.name, tag):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success it replaces `path`, on failure it is removed.

    The temporary name keeps the suffix (`clip.tmp-<pid>-k2j4.mp4`) so tools that pick a format from the
    extension (ffmpeg, imageio) still do. Whatever the body writes there is fsynced before the rename.

        with atomic_path("out/clip.mp4") as tmp:
            write_something(tmp)
    """
    path = Path(path)
    if not path.parent.is_dir():
        # Say which directory is missing rather than let mkstemp fail with a bare errno.
        raise VdmError(f"cannot write {path}: directory {path.parent} does not exist; create it first")
    remove_stale(path.parent, f"{glob_escape(path.stem)}.tmp-*{glob_escape(path.suffix)}", "tmp")
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=writer_prefix(path.stem, "tmp"), suffix=path.suffix)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp makes the file private (0600); give it the permissions a plain open() would.
        os.chmod(tmp, 0o666 & ~_UMASK)
        _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def glob_escape(text: str) -> str:
    """`text` as a literal in a glob pattern (a file name may hold [ ] * ?)."""
    return re.sub(r"([\[\]*?])", r"[\1]", text)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically (see the module docstring)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    """Write `text` to `path` atomically (see the module docstring)."""
    atomic_write_bytes(path, text.encode(encoding))
