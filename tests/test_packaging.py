"""Project invariants: CI runs README's test command, the plugin is found.

(That wire/, config/ and policy.py import no Twisted is test_layering.py's.)
"""

from __future__ import annotations

import importlib.util
import re

from twisted.application.service import IServiceMaker

from support import ROOT


def readme_commands() -> list[str]:
    text = (ROOT / "README.rst").read_text()
    return re.findall(r"::\n\n    (python3 -m venv .+)\n", text)


def test_ci_runs_the_readme_test_command():
    commands = readme_commands()
    assert len(commands) == 2, commands
    install_and_run, test = commands
    assert "twistd -n" in install_and_run and "etc/socketeer.properties" in install_and_run
    assert "pytest" in test
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test in ci_lines


def test_plugin_namespace_has_no_init():
    assert not (ROOT / "twisted" / "__init__.py").exists()
    assert not (ROOT / "twisted" / "plugins" / "__init__.py").exists()


def test_plugin_module_is_a_service_maker():
    # twistd's discovery itself is exercised by test_twistd.py (twistd --help, real runs).
    spec = importlib.util.spec_from_file_location(
        "socketeer_plugin_under_test", ROOT / "twisted" / "plugins" / "socketeer_plugin.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    maker = module.Socketeer
    assert IServiceMaker.providedBy(maker)
    assert maker.tapname == "socketeer"
    assert maker.options.__module__ == "socketeer.tap"
