"""Dependencies on the first Apply: torch through the PyTorch extension, the rest from requirements.txt.

Never at import time, never torch through pip directly, never the packages Slicer ships (numpy, scipy, SimpleITK).
"""

from __future__ import annotations

from pathlib import Path


class InstallError(Exception):
    """A dependency could not be set up; ``restart_required`` when Slicer must restart to finish."""

    def __init__(self, message: str, restart_required: bool = False) -> None:
        super().__init__(message)
        self.restart_required = restart_required


def ensure_torch(interactive: bool = True) -> None:
    """Make torch importable through PyTorchUtils (which matches the CUDA build to the driver).

    Raises:
        InstallError: the PyTorch extension is missing, or the user declined, or a restart is needed.
    """
    try:
        import PyTorchUtils  # type: ignore[import-not-found]
    except ImportError as err:
        raise InstallError(
            "FetalHeadSeg needs the PyTorch extension: install 'PyTorch' from the Extensions Manager "
            "and restart Slicer.",
            restart_required=False,
        ) from err
    logic = PyTorchUtils.PyTorchUtilsLogic()
    if logic.torchInstalled():
        return
    torch = logic.installTorch(askConfirmation=interactive, torchVersionRequirement=">=2.1")
    if torch is None:
        raise InstallError("PyTorch was not installed; FetalHeadSeg cannot segment without it.")
    try:
        import torch  # noqa: F401, F811 - importable in this session, or only after a restart
    except ImportError as err:
        raise InstallError(
            "PyTorch was installed but can only be loaded after Slicer restarts.", restart_required=True
        ) from err


def ensure_requirements(requirements: Path, interactive: bool = True) -> None:
    """Install the missing packages of ``requirements`` after one confirmation (Slicer >= 5.11: pip_ensure)."""
    import slicer

    packaging = getattr(slicer, "packaging", None)
    if packaging is not None and hasattr(packaging, "pip_ensure"):
        packaging.pip_ensure(packaging.load_requirements(str(requirements)), requester="FetalHeadSeg")
        return
    from importlib.metadata import PackageNotFoundError, version

    from packaging.requirements import Requirement

    missing = []
    for line in requirements.read_text().splitlines():
        line = line.split("#")[0].strip()
        if not line:
            continue
        requirement = Requirement(line)
        try:
            if version(requirement.name) not in requirement.specifier:
                missing.append(line)
        except PackageNotFoundError:
            missing.append(line)
    if not missing:
        return
    if interactive and not slicer.util.confirmOkCancelDisplay(
        "FetalHeadSeg needs these Python packages, which will be installed now:\n\n" + "\n".join(missing)
    ):
        raise InstallError("The required Python packages were not installed.")
    slicer.util.pip_install(missing)
