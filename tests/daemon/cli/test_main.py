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
