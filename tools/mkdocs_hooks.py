"""MkDocs hook: the configuration page's table is generated from the settings object, so it cannot drift."""

from __future__ import annotations

from typing import Any

from roadie.settings import Settings

PLACEHOLDER = "<!-- settings-table -->"


def settings_table() -> str:
    """Every setting as a Markdown table row: its environment variable, its default and what it does."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = "unset" if field.default is None else field.default
        meaning = (field.description or "").replace("|", "\\|").replace("\n", " ")
        rows.append(f"| `ROADIE_{name.upper()}` | `{default}` | {meaning} |")
    return "\n".join(rows)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    return markdown.replace(PLACEHOLDER, settings_table())
