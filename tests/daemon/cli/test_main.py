"""`nightshift …` argument checks that answer before the daemon is asked."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.cli.main import main


def test_silence_for_takes_the_one_duration_grammar(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["silence", "add", "alertname=X", "--state-dir", str(tmp_path), "--for"]
    assert main([*argv, "soon"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nightshift silence add: --for: duration 'soon' is not understood")
    assert "write e.g. 90s, 15m, 1.5h, 1h30m or 2d" in err
    assert main([*argv, "30m1h"]) == 2
    assert "repeats or misorders units" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["silence", "--state-dir", "/srv/ns", "add", "alertname=X", "--for", "1h"],
        ["silence", "add", "alertname=X", "--for", "1h", "--state-dir", "/srv/ns"],
        ["silence", "--state-dir", "/srv/ns", "expire", "3"],
        ["silence", "--state-dir", "/srv/ns", "list"],
        ["tasks", "--state-dir", "/srv/ns", "show", "backup"],
    ],
)
def test_a_state_dir_before_or_after_the_action_is_the_one_used(argv: list[str]) -> None:
    """`nightshift silence --state-dir D add …` used to talk to the default state directory:
    the action's own --state-dir default reset the one given before it."""
    from daemon.cli.main import build_parser

    assert build_parser().parse_args(argv).state_dir == Path("/srv/ns")
