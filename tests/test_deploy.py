"""Deploy files reference real commands and real settings."""

from __future__ import annotations

import configparser
import re
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT, koala

from ingest.config import Settings

UNITS = sorted((ROOT / "deploy" / "systemd").glob("*.service"))


def _variables() -> set[str]:
    names = set()
    for name, info in Settings.model_fields.items():
        alias = info.validation_alias
        names.add(alias.choices[0] if alias is not None else f"KOALA_{name.upper()}")  # type: ignore[union-attr]
    return names


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_systemd_unit_runs_a_real_koala_ingest_command(unit: Path) -> None:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.read(unit)
    exec_start = parser["Service"]["ExecStart"].split()
    assert exec_start[0].endswith("/koala-ingest")
    role = exec_start[1]
    assert unit.name == f"koala-ingest-{role}.service"
    done = subprocess.run(koala(role, "--help"), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert parser["Service"]["Restart"] == "always"
    assert parser["Service"]["KillSignal"] == "SIGTERM"


def test_env_example_names_only_known_variables() -> None:
    text = (ROOT / "deploy" / "systemd" / "env.example").read_text()
    names = set(re.findall(r"^([A-Z_]+)=", text, re.M))
    assert names and names <= _variables()


def test_procfile_runs_real_commands_and_web_binds_port() -> None:
    entries = dict(
        line.split(": ", 1) for line in (ROOT / "Procfile").read_text().splitlines() if line.strip()
    )
    assert {"web", "worker", "beat"} <= set(entries)
    for command in entries.values():
        program, role = command.split()[:2]
        assert program == "koala-ingest"
        assert (
            subprocess.run(koala(role, "--help"), capture_output=True, timeout=60).returncode == 0
        )


def test_readme_documents_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [v for v in _variables() if f"`{v}`" not in readme]
    assert not missing
