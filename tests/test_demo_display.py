"""``make demo`` shows its long steps: a live display on a terminal, plain lines in a pipe or a CI log."""

from __future__ import annotations

import io

from rich.console import Console

from roadie.demo import Display


def test_in_a_pipe_each_step_and_each_stage_change_is_one_plain_line() -> None:
    out = io.StringIO()
    with Display(Console(file=out, force_terminal=False, soft_wrap=True)) as display:
        with display.step("migrating the database"):
            pass
        for status, percent in [("running", 10), ("running", 60), ("succeeded", 100)]:
            display.stage("transcode", status, percent)

    lines = out.getvalue().splitlines()
    assert lines[0] == "migrating the database ..."
    assert lines[1].startswith("migrating the database: done in ")
    assert [line.split() for line in lines[2:]] == [["transcode", "running"], ["transcode", "succeeded"]]
    assert "\x1b" not in out.getvalue()  # no cursor movement or colour for a file


def test_on_a_terminal_the_display_is_live_and_redrawn_in_place() -> None:
    out = io.StringIO()
    with Display(Console(file=out, force_terminal=True, width=100)) as display, display.step("starting the servers"):
        display.stage("transcode", "running", 40)

    assert display.live
    assert "\x1b[2K" in out.getvalue()  # erased and redrawn, not appended
    assert "starting the servers: done in " in out.getvalue()
