"""The running daemon as a user meets it: one instance per state dir, reload, watchdog, probes."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import stat
from pathlib import Path

import aiohttp
import pytest

from tests.support import NIGHTSHIFT, ROOT, DaemonProcess, eventually, write_config


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_second_instance_on_the_same_state_dir_is_refused(tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.toml", None)
    first = DaemonProcess(config, tmp_path / "state")
    await first.start()
    try:
        proc = await asyncio.create_subprocess_exec(
            *NIGHTSHIFT,
            "run",
            "--config",
            str(config),
            "--state-dir",
            str(tmp_path / "state"),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        _, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 1
        assert "already running" in err.decode() and str(tmp_path / "state") in err.decode()
        code, _, _ = await first.cli("status")  # the first one is unharmed
        assert code == 0
    finally:
        assert await first.stop() == 0


async def test_database_from_a_newer_release_is_refused_untouched(tmp_path: Path) -> None:
    state = tmp_path / "state"
    config = write_config(tmp_path / "config.toml", None)
    first = DaemonProcess(config, state)
    await first.start()
    await first.stop()
    db = state / "nightshift.db"
    conn = sqlite3.connect(db)
    with conn:
        conn.execute(
            "INSERT INTO schema_version (version, name, applied_at) "
            "VALUES (999, 'future', '2030-01-01T00:00:00.000000Z')"
        )
    conn.close()  # checkpoints the WAL into the main file
    before = db.read_bytes()
    again = DaemonProcess(config, state)
    await again.start(wait_ready=False)
    assert await again.wait() == 78
    output = await again.output()
    assert "schema version 999" in output and "newer" in output
    await again.stop()
    assert db.read_bytes() == before


async def test_sighup_applies_safe_changes_and_rejects_a_broken_config(tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.toml", None, agent={"max_steps": 5})
    daemon = DaemonProcess(config, tmp_path / "state")
    await daemon.start()
    try:
        config.write_text(
            config.read_text().replace("max_steps = 5", "max_steps = 9")
            + '[api]\nsocket = "other.sock"\n'
        )
        daemon.signal(signal.SIGHUP)
        assert daemon.notifications is not None
        await daemon.notifications.wait_for("RELOADING=1")
        await eventually(lambda: "reload: applied" in daemon.log_path.read_text(), timeout=20)
        output = await daemon.output()
        assert "reload: applied agent" in output
        assert "api changed and need a restart" in output

        config.write_text("[agent]\nmax_steps = -1\n")
        code, out, _ = await daemon.cli("reload", "--state-dir", str(daemon.state_dir))
        assert code == 78 and "agent.max_steps" in out and "old config" in out
        code, _, _ = await daemon.cli("status")
        assert code == 0  # still running on the last good config
    finally:
        assert await daemon.stop() == 0


async def test_watchdog_pings_and_status_lines_reach_systemd(tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.toml", None)
    daemon = DaemonProcess(config, tmp_path / "state", env={"WATCHDOG_USEC": "400000"})
    await daemon.start()
    try:
        assert daemon.notifications is not None
        ready = await daemon.notifications.wait_for("READY=1")
        assert "STATUS=agent off" in ready
        await daemon.notifications.wait_for("WATCHDOG=1", timeout=3)
        count = sum("WATCHDOG=1" in m for m in daemon.notifications.drain())
        await daemon.notifications.wait_for("WATCHDOG=1", count=count + 3, timeout=10)
    finally:
        await daemon.stop()
    assert daemon.notifications is not None
    assert any("STOPPING=1" in m for m in daemon.notifications.received)


async def test_socket_is_owner_only_and_probes_answer_on_tcp(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path / "config.toml", None, api={"tcp_port": port})
    daemon = DaemonProcess(config, tmp_path / "state")
    await daemon.start()
    try:
        mode = stat.S_IMODE((daemon.state_dir / "nightshift.sock").stat().st_mode)
        assert mode == 0o600
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                assert response.status == 200
                assert (await response.json())["status"] == "ok"
            async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
                body = await response.text()
                assert 'nightshift_component_up{component="watcher.host"} 1.0' in body
                assert "nightshift_incidents_open 0.0" in body
                assert 'nightshift_alerts{state="firing"} 0.0' in body
                assert "nightshift_llm_daily_token_budget 2e+06" in body
            async with session.post(f"http://127.0.0.1:{port}/v1/chat", json={"text": "hi"}) as r:
                assert r.status == 404  # chat is never exposed on TCP
    finally:
        await daemon.stop()


async def test_client_commands_explain_when_the_daemon_is_not_running(tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.toml", None)
    daemon = DaemonProcess(config, tmp_path / "state")
    code, _, err = await daemon.cli("status")
    assert code == 3
    assert "not running" in err and "nightshift run" in err
    code, _, err = await daemon.cli("chat", "-m", "hello")
    assert code == 1 and "not running" in err


async def test_status_and_doctor_say_why_read_only_tools_need_approval(tmp_path: Path) -> None:
    """Without a sandbox the read-only tier fails closed, and both commands say so."""
    config = write_config(tmp_path / "config.toml", None, policy={"sandbox": "off"})
    daemon = DaemonProcess(config, tmp_path / "state")
    await daemon.start()
    try:
        code, out, _ = await daemon.cli("status")
        assert code == 0
        expected = (
            'sandbox:   unavailable (turned off by [policy] sandbox = "off"); '
            "read-only tools need approval"
        )
        assert expected in out
        code, out, _ = await daemon.cli("doctor")
        assert "warn  sandbox: unavailable (turned off" in out
        assert "warn  daemon sandbox: unavailable (turned off" in out
    finally:
        assert await daemon.stop() == 0


async def test_status_shows_the_sandbox_in_use(tmp_path: Path) -> None:
    from daemon.agent.sandbox import probe

    if not probe().available:
        pytest.skip(f"no sandbox here: {probe().detail}")
    daemon = DaemonProcess(write_config(tmp_path / "config.toml", None), tmp_path / "state")
    await daemon.start()
    try:
        code, out, _ = await daemon.cli("status")
        assert code == 0 and "sandbox:   available (bubblewrap" in out
    finally:
        assert await daemon.stop() == 0
