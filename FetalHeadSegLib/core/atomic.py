"""Atomic file output: write next to the destination, then rename into place.

A reader never sees a half-written file, and a failure or cancel leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from FetalHeadSegLib.core.errors import OutputError

STAGING_PREFIX = ".fetalheadseg-"
_SWEPT: set[Path] = set()
"""Folders already swept of stale staging folders by this process (once is enough: a cohort writes many times)."""


@contextlib.contextmanager
def atomic_output_dir(destination_dir: str | os.PathLike[str], last: str | None = None) -> Iterator[Path]:
    """Yield a fresh staging folder inside ``destination_dir``; on success move its files into place.

    Files written into the staging folder appear in ``destination_dir`` only when the ``with`` block ends without
    an exception; otherwise the staging folder is removed and the destination is left as it was. Each file is
    renamed into place (never half-written); the file named ``last`` goes last, so its presence means all the
    others are there (a completion marker for a process killed in between).

    Raises:
        OutputError: the destination folder cannot be created or written.
    """
    destination = Path(destination_dir)
    try:
        destination.mkdir(parents=True, exist_ok=True)
        remove_stale_staging(destination)
        staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=destination))
    except OSError as err:
        raise OutputError(f"{destination}: cannot write to this folder ({err.strerror or err})") from err
    try:
        yield staging
        for item in sorted(staging.iterdir(), key=lambda path: (path.name == last, path.name)):
            os.replace(item, destination / item.name)
    except OSError as err:
        raise OutputError(f"{destination}: writing the outputs failed ({err.strerror or err})") from err
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write a UTF-8 text file atomically and return its path.

    Raises:
        OutputError: the file cannot be written.
    """
    target = Path(path)
    with atomic_output_dir(target.parent) as staging:
        (staging / target.name).write_text(text, encoding="utf-8")
    return target


def remove_stale_staging(directory: Path) -> None:
    """Remove staging folders left in ``directory`` by processes that no longer run (killed with SIGKILL).

    Only on POSIX, where signal 0 asks whether a process exists (on Windows ``os.kill`` would end it).
    """
    if os.name != "posix" or directory in _SWEPT:
        return
    _SWEPT.add(directory)
    for staging in directory.glob(f"{STAGING_PREFIX}*-*"):
        pid_text = staging.name[len(STAGING_PREFIX) :].split("-", 1)[0]
        if not pid_text.isdigit() or not staging.is_dir():
            continue
        try:
            os.kill(int(pid_text), 0)
        except ProcessLookupError:
            shutil.rmtree(staging, ignore_errors=True)
        except PermissionError:
            continue  # another user's live process
