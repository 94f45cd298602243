"""The command line imports a command's module only when that command runs
(``clipsql.cli.MODULES``), so that ``clipsql load`` does not pay for ``caption`` or ``serve``."""

import importlib
import json
import subprocess
import sys

from clipsql.cli import MODULES, main


def test_modules_name_every_command_where_it_is():
    found = {}
    for module in set(MODULES.values()):
        for command in importlib.import_module(f"clipsql.cli.{module}").COMMANDS:
            found[command.name] = module
    assert found == MODULES
    assert sorted(main.commands) == sorted(MODULES)  # `commands`, as in any click group


def test_running_one_command_imports_only_its_module():
    code = ("import json, sys\n"
            "from clipsql.cli import main\n"
            "main(['load', '--help'], standalone_mode=False)\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('clipsql.cli.'))))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=120)
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert loaded == ["clipsql.cli.load", "clipsql.cli.options", "clipsql.cli.output"]
