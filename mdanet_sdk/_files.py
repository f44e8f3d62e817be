"""Atomic file writes: every file the SDK writes appears whole or not at all.

A write goes to a hidden temporary file beside its target, named ``.<target>.<host>.<pid>.<random>.tmp<ext>``,
and is renamed over the target when complete. The temporary file is removed on any error, Ctrl-C and (in the
command line, which turns SIGTERM into the same interrupt) ``kill``/``timeout``/``docker stop``. A process that
is killed outright (SIGKILL, power loss) cannot clean up; the next write of the same target removes the
temporary files that dead processes of this host left for it.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import shutil
import signal
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

from mdanet_sdk._text import without_surrogates

__all__ = ["atomic_write", "write_json", "temp_prefix", "remove_stale_temps", "file_key", "signals_deferred"]

_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:32] or "host"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates owner-only files (0600); outputs should get the usual permissions (0644 under umask 022).
_FILE_MODE = 0o666 & ~_umask()


def atomic_write(
    path: str | os.PathLike[str], write: Callable[[Path], object], *, tmp_suffix: str | None = None
) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it over ``path``.

    The temporary name keeps ``path``'s suffixes (``.nii.gz`` stays gzip for nibabel), or ends in
    ``tmp_suffix`` for a writer that insists on its own (``torch.export.save`` warns unless a name ends in
    ``.pt2``). On any error the temporary file is removed and an existing ``path`` is left untouched.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    if tmp_suffix is None:
        tmp_suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".gz") else path.suffix
    try:
        fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path), suffix=f".tmp{tmp_suffix}", dir=path.parent)
    except OSError as exc:  # name the file asked for, not a temporary name the user never gave
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        if exc.filename in (tmp, Path(tmp)):
            raise OSError(exc.errno, exc.strerror, str(path)) from None
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM until the block ends, so a few renames that must happen together do: the signal is
    noted meanwhile and raised again when the block ends (in the main thread, where Python runs its signal
    handlers, whichever thread the system delivered it to; elsewhere the block runs as it is)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    held = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.signal(s, lambda signum, frame: received.append(signum)) for s in held}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if received:
            signal.raise_signal(received[0])


def temp_prefix(path: Path) -> str:
    """The name prefix of this process's temporary files for ``path`` (see the module docstring)."""
    return f".{path.name}.{_HOST}.{os.getpid()}."


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def remove_stale_temps(path: Path) -> list[Path]:
    """Remove the temporary files (or folders) for ``path`` that processes of this host which no longer run left
    behind.

    Temporary files of live processes (a concurrent run writing the same target) and of other hosts (a shared
    file system) are kept.

    Returns:
        the files removed.
    """
    pattern = re.compile(re.escape(f".{path.name}.") + r"(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)\.[^/]*\.tmp[^/]*$")
    removed: list[Path] = []
    try:
        candidates = list(path.parent.glob(f".{glob.escape(path.name)}.*.tmp*"))
    except OSError:
        return removed
    for candidate in candidates:
        found = pattern.match(candidate.name)
        if found is None or found["host"] != _HOST or _alive(int(found["pid"])):
            continue
        try:
            if candidate.is_dir() and not candidate.is_symlink():  # a dataset folder written the same way
                shutil.rmtree(candidate)
            else:
                candidate.unlink()
            removed.append(candidate)
        except OSError:  # removed meanwhile, or not ours to remove: not worth failing the write for
            pass
    return removed


def write_json(path: str | os.PathLike[str], obj: Any, indent: int = 2, *, names_as_text: bool = False) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically.

    ``names_as_text``: for reports read by other programs, strings from file names made valid UTF-8
    (:func:`~mdanet_sdk._text.without_surrogates`: an undecodable byte becomes ``\\xff`` text). Records that this
    SDK reads back as paths (a run's ``config.json``) keep Python's exact ``\\udcff`` escapes instead.
    """
    text = json.dumps(without_surrogates(obj) if names_as_text else obj, indent=indent) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def file_key(path: Path) -> tuple[Any, ...]:
    """One key per file: the inode of an existing file (hard links, symlinks and ``..`` agree), else the
    resolved path, case-folded where the file system folds case."""
    try:
        st = path.stat()
        return ("inode", st.st_dev, st.st_ino)
    except OSError:
        return ("path", os.path.normcase(os.path.realpath(path)))
