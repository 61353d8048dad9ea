"""The documents describe what the code reads, and the documentation site builds without a broken link."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from roadie.settings import Settings
from tests.conftest import ROOT


def test_the_documentation_site_builds_in_strict_mode_and_lists_every_setting_with_its_default(
    tmp_path: Path,
) -> None:
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        check=False,
        cwd=ROOT,
        env=os.environ | {"NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert built.returncode == 0, built.stderr
    configuration = (tmp_path / "configuration" / "index.html").read_text()
    for name, field in Settings.model_fields.items():
        default = "unset" if field.default is None else field.default
        assert f"<code>ROADIE_{name.upper()}</code></td>\n<td><code>{default}</code>" in configuration, name


def test_the_readme_is_a_front_door_with_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()

    assert "make demo" in readme
    assert "make test" in readme
    assert len(readme.splitlines()) <= 300
