"""The README documents what the code reads."""

from __future__ import annotations

from roadie.settings import Settings
from tests.conftest import ROOT


def test_the_readme_lists_every_setting_with_its_default() -> None:
    readme = (ROOT / "README.md").read_text()

    for name, field in Settings.model_fields.items():
        default = "unset" if field.default is None else field.default
        assert f"| `ROADIE_{name.upper()}` | `{default}` |" in readme, name


def test_the_readme_shows_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()

    assert "make demo" in readme
    assert "make test" in readme
