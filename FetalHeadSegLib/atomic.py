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

from FetalHeadSegLib.errors import OutputError


@contextlib.contextmanager
def atomic_output_dir(destination_dir: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a fresh staging folder inside ``destination_dir``; on success move its files into place.

    Files written into the staging folder appear in ``destination_dir`` only when the ``with`` block ends without
    an exception; otherwise the staging folder is removed and the destination is left as it was.

    Raises:
        OutputError: the destination folder cannot be created or written.
    """
    destination = Path(destination_dir)
    try:
        destination.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".fetalheadseg-", dir=destination))
    except OSError as err:
        raise OutputError(f"{destination}: cannot write to this folder ({err.strerror or err})") from err
    try:
        yield staging
        for item in sorted(staging.iterdir()):
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
