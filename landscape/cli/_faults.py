"""File-system faults and library warnings, each turned into one line for the user."""

from __future__ import annotations

import contextlib
import errno
import os
import sys
import warnings
from pathlib import Path

#: warnings a user can do nothing about (library deprecations): silenced
NOISE = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)
#: longest note printed for one warning
NOTE_CHARS = 200


class NotWritableError(OSError):
    """``--out`` cannot be created or written (message: one line naming it)."""


def check_writable(folder: str | os.PathLike) -> None:
    """Write and remove a probe file in ``folder`` before any computation; folders created
    for the probe are removed again (a command that then stops on bad input leaves nothing).

    Raises:
        NotWritableError: the folder cannot be created or written (one line naming it).
    """
    folder = Path(folder)
    created = [p for p in (folder, *folder.parents) if not p.exists()]
    probe = folder / f".landscape-probe-{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with open(probe, "wb") as handle:
            handle.write(b"probe")
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as err:
        reason = err.strerror or str(err)
        raise NotWritableError(
            f"cannot write to --out {str(folder)!r} ({reason}); choose a writable folder",
        ) from None
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()
        for path in created:  # deepest first
            with contextlib.suppress(OSError):
                path.rmdir()


def os_error_line(err: OSError) -> str:
    """One line for an OS error: its message, the file it names and what to do."""
    if isinstance(err, NotWritableError):
        return str(err)
    text = err.strerror or str(err) or type(err).__name__
    if err.filename is not None:
        text = f"{text}: {err.filename}"
    hint = {
        errno.ENOSPC: "free some disk space and run the command again (it resumes what finished)",
        errno.EACCES: "choose a folder you can write, e.g. --out under your home",
        errno.EROFS: "choose a folder on a writable file system",
        errno.EDQUOT: "free some of your quota and run the command again",
    }.get(err.errno)
    return f"{text}; {hint}" if hint and hint not in text else text


def _note(message, category, filename, lineno, file=None, line=None) -> None:
    first = str(message).strip().splitlines()[0] if str(message).strip() else category.__name__
    if len(first) > NOTE_CHARS:
        first = first[: NOTE_CHARS - 3] + "..."
    print(f"landscape: note: {first}", file=sys.stderr)


@contextlib.contextmanager
def one_line_warnings():
    """Python warnings as one line ``landscape: note: ...`` each (once per place), library
    deprecations silenced; the previous warning settings are restored on exit."""
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        for category in NOISE:
            warnings.simplefilter("ignore", category)
        warnings.showwarning = _note
        yield
