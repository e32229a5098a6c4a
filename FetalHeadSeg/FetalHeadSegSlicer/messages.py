"""What the panel tells the user: one actionable sentence per worker error code and warning code.

The worker reports errors as the library's exception class names (``FetalHeadSegLib/core/errors.py``) and warnings
as quality-flag codes (``FetalHeadSegLib/measure/quality.py``, ``FetalHeadSegLib/inference/engine.py``). No Slicer
import: testable anywhere.
"""

from __future__ import annotations

ERROR_ADVICE = {
    "InputImageError": "Check the input volume; for PNG/JPEG frames set the pixel size.",
    "BundleError": "Choose another model, or import the model again (Advanced > Import model file).",
    "ChecksumError": "The model files are damaged or were changed: import the model again.",
    "DeviceError": "Set Device to cpu, or check the GPU with the PyTorch Utils module.",
    "OutputError": "Free some disk space in Slicer's temporary folder and try again.",
    "ConfigError": "Choose another model, or report the problem with the copied log.",
}

WARNING_ADVICE = {
    "oom_fallback": "The GPU ran out of memory, so part of the work ran in tiles or on the CPU (slower, same result).",
    "touches_border": "The head touches the image border: it may be cut off, and its measurements too small.",
    "no_head_found": "No head was found: check that the volume shows a fetal head and that the right model is chosen.",
    "biometry_failed": "The head was segmented but could not be measured: check the segmentation.",
    "tta_disagreement_high": "The flipped predictions disagree: check the segmentation before using the measurements.",
}


def error_message(code: str | None, message: str | None, returncode: int | None, last_line: str = "") -> str:
    """The sentence shown when a run fails: the worker's own message plus what to do about it.

    Args:
        code, message: the worker's ``error`` event (None when it crashed without one).
        returncode: the worker's exit status (negative: killed by that signal).
        last_line: the last line the worker wrote to stderr, quoted when there is no error event.
    """
    if message:
        advice = ERROR_ADVICE.get(code or "", "")
        return f"{message.rstrip('.')}. {advice}".strip()
    if returncode is not None and returncode < 0:
        return (
            f"The segmentation process was killed (signal {-returncode}): it may have run out of memory. "
            "Try Device: cpu."
        )
    detail = f" ({last_line.strip()})" if last_line.strip() else ""
    return (
        f"The segmentation process stopped without a result (exit code {returncode}){detail}. "
        "Copy the log (Advanced > Copy log) when reporting the problem."
    )


def warning_message(code: str | None, message: str | None) -> str:
    """The sentence shown for a worker warning: the advice for known codes, else the worker's message."""
    return WARNING_ADVICE.get(code or "", message or str(code))
