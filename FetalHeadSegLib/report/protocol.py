"""JSON-lines events on stdout for a supervising process (the Slicer module's worker, ``slicer.md`` §6).

One JSON object per line, with an ``event`` field: ``start`` (version, device, model_id, model_sha256),
``progress`` (input, fraction 0-1, stage, message), ``warning`` (input, code, message), ``result`` (input,
outputs, seconds), ``error`` (input, code, message), ``done`` (succeeded, failed).
"""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO


def emit(event: str, stream: TextIO | None = None, **fields: Any) -> None:
    """Write one event as a JSON line and flush it (the reader acts on each line as it arrives)."""
    target = stream if stream is not None else sys.stdout
    target.write(json.dumps({"event": event, **fields}, default=str) + "\n")
    target.flush()
