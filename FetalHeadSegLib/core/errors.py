"""Exceptions raised for problems a user can fix.

Every message names the file or value at fault, what was expected and what was found, so that the command line
and the Slicer module can show it as one line without a traceback.
"""

from __future__ import annotations


class FetalHeadSegError(Exception):
    """Base class of the errors FetalHeadSeg reports to users."""


class InputImageError(FetalHeadSegError):
    """An input image or mask cannot be used (unreadable, wrong shape, empty, bad geometry)."""


class OutputError(FetalHeadSegError):
    """An output cannot be written (folder missing or read-only, disk full)."""


class BundleError(FetalHeadSegError):
    """A model bundle is missing, malformed or incompatible."""


class ChecksumError(BundleError):
    """A model file's SHA-256 does not match the one recorded for it."""


class DeviceError(FetalHeadSegError):
    """The requested compute device is not available."""


class ConfigError(FetalHeadSegError):
    """A configuration or command-line option has an invalid value."""


class DependencyError(FetalHeadSegError):
    """An installed library cannot do its part in this combination of versions (the message names the fix)."""


class Cancelled(Exception):  # noqa: N818 - an outcome, not an error
    """The caller asked to stop (raised between steps; nothing is written)."""
