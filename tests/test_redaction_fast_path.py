"""The redaction shortcut skips text no pattern can match, and only such text."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from roadie.logs import _substitute, redact_text

#: Pieces that make the patterns match (or nearly), in several cases, and plain text around them;
#: the long s, the Kelvin sign and the dotless i match ASCII letters when case is ignored.
FRAGMENTS = [
    "rk_live_", "RK_LIVE_", "abc123", "Authorization", "AUTHORISATION", ": ", "=", "Bearer ", "basic ", "token",
    "Pass", "passwd", "SECRET", "api_key", "private", "credential", "Cookie", "mnemonic", "[", "]", "1", "255", ", ",
    '"', "'", "job.accepted", "\u017f", "\u212a", "\u0131", " ", "\n",
]  # fmt: skip


@given(st.lists(st.sampled_from(FRAGMENTS), max_size=30).map("".join))
def test_the_shortcut_changes_no_outcome(text: str) -> None:
    assert redact_text(text) == _substitute(text)


def test_a_keypair_array_is_still_masked() -> None:
    keypair = "[" + ", ".join(["7"] * 64) + "]"

    assert redact_text(f"loaded {keypair}") == "loaded [REDACTED keypair]"


def test_plain_values_pass_unchanged() -> None:
    for value in ("job.accepted", "a162e696b0bf4953b9b401456e50eea6", "/v1/jobs", "platform.echo"):
        assert redact_text(value) is value
