"""`nightshift backup` / `restore` on real SQLite files, with a real writer process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import stat
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from daemon.cli.backup import run_restore
from daemon.cli.main import main
from daemon.config import load_settings
from daemon.runtime.process import StateLock
from memory.backup import MAIN_TABLES, backup_database, known_version
from memory.store import SqliteStore
from tests.daemon.cli._backup_writer import BATCH
from tests.support import ROOT, DaemonProcess, write_config

WRITER = Path(__file__).with_name("_backup_writer.py")


class Writer:
    """The helper writer process; ``last`` is the newest batch it reported committed."""

    def __init__(self, path: Path, *extra: str) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(
            [sys.executable, str(WRITER), str(path), *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
        )  # fmt: skip
        self.last = 0
        self.changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self.changed:
                self.last = int(line)
                self.changed.notify_all()
        with self.changed:
            self.changed.notify_all()

    def wait_beyond(self, batch: int) -> None:
        """Block until a batch after ``batch`` is committed (a condition, not a fixed wait)."""
        with self.changed:
            done = self.changed.wait_for(
                lambda: self.last > batch or not self._reader.is_alive(), timeout=60
            )
        if self.last <= batch:
            assert self.proc.stderr is not None
            raise AssertionError(f"writer stalled or exited ({done}): {self.proc.stderr.read()!r}")

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._reader.join()
        for stream in (self.proc.stdout, self.proc.stderr):
            assert stream is not None
            stream.close()


def new_database(path: Path, *, megabytes: float = 0) -> None:
    """A migrated nightshift database holding about ``megabytes`` of component events."""

    async def create() -> None:
        async with await SqliteStore.open(path) as store:
            rows = int(megabytes * 1000)
            async with store.write() as db:
                await db.executemany(
                    "INSERT INTO component_events (component, event, detail, created_at)"
                    " VALUES ('prefill', 'x', ?, '2026-12-06T00:00:00.000000Z')",
                    ((f"{i} " + "p" * 1000,) for i in range(rows)),
                )

    asyncio.run(create())


def batches(path: Path) -> dict[int, int]:
    """Rows per writer batch in the database at ``path``, after checking its integrity."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert [row[0] for row in conn.execute("PRAGMA integrity_check")] == ["ok"]
        rows = conn.execute(
            "SELECT CAST(event AS INTEGER), COUNT(*) FROM component_events"
            " WHERE component = 'backup-writer' GROUP BY 1"
        ).fetchall()
    return {int(batch): int(count) for batch, count in rows}


def assert_holds_batches_through(path: Path, committed: int) -> int:
    """Every batch up to ``committed`` is there, each whole, none after a gap; the last one."""
    found = batches(path)
    assert set(range(1, committed + 1)) <= set(found)
    assert set(found.values()) == {BATCH}  # no half transaction
    assert sorted(found) == list(range(1, max(found) + 1))  # a prefix of the commit order
    return max(found)


@pytest.fixture
def live(tmp_path: Path) -> Path:
    path = tmp_path / "state" / "nightshift.db"
    new_database(path, megabytes=4)
    return path


def test_backup_under_write_load_restores_every_committed_row(live: Path, tmp_path: Path) -> None:
    """Another process commits between every step of the copy; the copy is the snapshot at
    its start: every batch committed before it, whole, and nothing torn."""
    target = tmp_path / "backup.db"
    steps: list[int] = []
    with Writer(live) as writer:
        writer.wait_beyond(9)
        committed = writer.last  # printed only after COMMIT returned

        def progress(status: int, remaining: int, total: int) -> None:
            steps.append(remaining)
            # a copy restarted by each concurrent commit would never end
            assert len(steps) <= total // 64 + 1, "the backup restarted"
            writer.wait_beyond(writer.last)  # a commit lands between this step and the next

        summary = backup_database(live, target, pages_per_step=64, progress=progress)
        during = writer.last - committed
    assert len(steps) > 10 and during >= len(steps)  # the copy really ran under writes
    assert summary.schema_version == known_version()
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert not Path(f"{target}-wal").exists()  # one self-contained file
    last_in_backup = assert_holds_batches_through(target, committed)
    assert last_in_backup < writer.last  # later commits belong to the next backup

    state = tmp_path / "restored"
    assert main(["restore", str(target), "--state-dir", str(state)]) == 0
    assert assert_holds_batches_through(state / "nightshift.db", committed) == last_in_backup
    assert not Path(f"{target}-shm").exists()  # the backup file was only read

    async def daemon_opens() -> dict[str, object]:
        async with await SqliteStore.open(state / "nightshift.db") as store:
            return await store.check()

    assert asyncio.run(daemon_opens())["ok"] is True


def test_cli_backup_while_writing_then_restore(
    live: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "b.db"
    state = str(live.parent)
    with Writer(live) as writer:
        writer.wait_beyond(4)
        committed = writer.last
        assert main(["backup", str(target), "--state-dir", state]) == 0
        out = capsys.readouterr().out
        # refuses to overwrite, leaving the first backup as it was
        before = target.read_bytes()
        assert main(["backup", str(target), "--state-dir", state]) == 1
        assert "already exists; pass --force" in capsys.readouterr().err
        assert target.read_bytes() == before
        writer.wait_beyond(writer.last)
        forced = writer.last  # committed before the second backup started
        assert main(["backup", str(target), "--state-dir", state, "--force"]) == 0
        capsys.readouterr()
    assert f"wrote {target} (mode 0600)" in out
    assert f"schema version {known_version()}" in out
    assert all(f"{table} " in out for table in ("messages", "incidents", "audit_log"))
    assert assert_holds_batches_through(target, forced) >= committed
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp left


def test_restore_is_refused_while_the_state_lock_is_held(
    live: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    backup_database(live, tmp_path / "b.db")
    original = live.read_bytes()
    lock = StateLock(live.parent)
    lock.acquire()
    try:
        assert main(["restore", str(tmp_path / "b.db"), "--state-dir", str(live.parent)]) == 1
    finally:
        lock.release()
    err = capsys.readouterr().err
    assert "nightshift restore: refused: nightshift is already running on" in err
    assert "stop it first" in err and "Nothing was changed" in err
    assert live.read_bytes() == original
    assert not list(live.parent.glob("*before-restore*"))


@pytest.mark.parametrize("kind", ["text", "foreign", "too_new", "damaged", "missing", "dir"])
def test_restore_refuses_what_is_not_a_usable_backup(
    kind: str, live: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.db"
    expected = {
        "text": "file is not a database. Hint: it is not an SQLite database",
        "foreign": "is an SQLite database but not nightshift's",
        "too_new": f"has schema version 999, but this nightshift knows only up to "
        f"{known_version()}: a newer release wrote it. Upgrade nightshift, then restore",
        "damaged": "damaged",
        "missing": "does not exist; give the path of a file written by `nightshift backup`",
        "dir": "is not a file",
    }[kind]
    if kind == "text":
        bad.write_text("not a database\n" * 100)
    elif kind == "foreign":
        with contextlib.closing(sqlite3.connect(bad)) as conn:
            conn.execute("CREATE TABLE t (x)")
            conn.commit()
    elif kind in ("too_new", "damaged"):
        backup_database(live, bad)
        with contextlib.closing(sqlite3.connect(bad)) as conn:
            if kind == "too_new":
                conn.execute("INSERT INTO schema_version VALUES (999, 'future', '2030')")
            else:  # a corrupt page in the middle of the events table
                page = conn.execute("PRAGMA page_size").fetchone()[0]
                size = bad.stat().st_size
            conn.commit()
        if kind == "damaged":
            with open(bad, "r+b") as handle:
                handle.seek((size // page // 2) * page)
                handle.write(b"\xff" * page)
    elif kind == "dir":
        bad.mkdir()
    original = live.read_bytes()
    assert main(["restore", str(bad), "--state-dir", str(live.parent)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("nightshift restore: ")
    assert expected in err
    assert live.read_bytes() == original
    assert sorted(p.name for p in live.parent.iterdir()) == ["nightshift.db", "nightshift.lock"]


def test_restore_keeps_the_current_database_with_its_wal_as_a_side_copy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    live = state / "nightshift.db"
    new_database(live)
    backup_database(live, tmp_path / "b.db")  # holds no writer batch
    with Writer(live, "--vanish-after", "7") as writer:
        writer.wait_beyond(6)
        assert writer.proc.wait(timeout=60) == 0
    wal = Path(f"{live}-wal")
    assert wal.stat().st_size > 0  # the 7 batches are only in the -wal: a crash left it

    settings = load_settings(None, state_dir=state)
    now = datetime(2026, 12, 6, 4, 5, 6, tzinfo=UTC)
    assert run_restore(settings, tmp_path / "b.db", now=now) == 0
    out = capsys.readouterr().out
    side = state / "nightshift.db.before-restore-20261206T040506Z"
    assert f"the previous database is kept as {side}" in out
    assert f"restored {tmp_path / 'b.db'} to {live}: " in out
    assert not Path(f"{side}-wal").exists()  # folded into the side copy: one file to keep
    assert batches(side) == {n: BATCH for n in range(1, 8)}  # nothing committed was lost
    assert batches(live) == {}  # the backup's contents, not the old -wal replayed into it
    assert not wal.exists() and not Path(f"{live}-shm").exists()
    assert stat.S_IMODE(live.stat().st_mode) == 0o600
    assert stat.S_IMODE(side.stat().st_mode) == 0o600

    assert run_restore(settings, tmp_path / "b.db", now=now) == 0  # same second: a new name
    assert (state / "nightshift.db.before-restore-20261206T040506Z-2").exists()


def test_backup_explains_a_missing_database_and_a_bad_target(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    assert main(["backup", str(tmp_path / "b.db"), "--state-dir", str(state)]) == 1
    assert "no database at" in capsys.readouterr().err
    assert not state.exists()  # nothing created
    new_database(state / "nightshift.db")
    assert main(["backup", str(tmp_path), "--state-dir", str(state)]) == 1
    assert "is a directory; give a file name" in capsys.readouterr().err
    assert main(["backup", str(tmp_path / "no" / "b.db"), "--state-dir", str(state)]) == 1
    assert "does not exist; create it first" in capsys.readouterr().err
    original = (state / "nightshift.db").read_bytes()
    for live in ("nightshift.db", "nightshift.db-wal"):
        assert main(["backup", str(state / live), "--state-dir", str(state), "--force"]) == 1
        assert "is the live database (or its journal)" in capsys.readouterr().err
    assert (state / "nightshift.db").read_bytes() == original


async def test_backup_of_a_running_daemon_and_restore_once_it_stopped(tmp_path: Path) -> None:
    """The real daemon: backup while it runs, restore refused until it stops, then it starts
    on the restored database."""
    daemon = DaemonProcess(write_config(tmp_path / "config.toml", None), tmp_path / "state")
    backup = tmp_path / "b.db"
    await daemon.start()
    try:
        code, out, err = await daemon.cli("backup", str(backup))
        assert code == 0, err
        assert f"wrote {backup} (mode 0600)" in out
        assert all(f" {table} " in out for table in MAIN_TABLES)
        code, out, err = await daemon.cli("restore", str(backup))
        assert code == 1
        assert "refused: nightshift is already running on" in err
        assert "systemctl stop nightshift" in err
    finally:
        await daemon.stop()
    code, out, err = await daemon.cli("restore", str(backup))
    assert code == 0, err
    assert "the previous database is kept as" in out
    await daemon.start()  # opens the restored file
    try:
        code, out, _ = await daemon.cli("status")
        assert code == 0, out
    finally:
        await daemon.stop()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (sudo nightshift restore)")
def test_restore_as_root_gives_the_file_to_the_state_directory_owner(
    live: Path, tmp_path: Path
) -> None:
    backup_database(live, tmp_path / "b.db")
    os.chown(live.parent, 4242, 4242)  # the service user's state directory
    assert main(["restore", str(tmp_path / "b.db"), "--state-dir", str(live.parent)]) == 0
    assert (live.stat().st_uid, live.stat().st_gid) == (4242, 4242)
    lock = live.parent / "nightshift.lock"
    assert (lock.stat().st_uid, lock.stat().st_gid) == (4242, 4242)


def test_restore_reads_a_copied_database_through_its_wal(tmp_path: Path) -> None:
    """A live database copied with its -wal (not a `nightshift backup` file) restores whole."""
    copy = tmp_path / "copy" / "nightshift.db"
    new_database(copy)
    with Writer(copy, "--vanish-after", "3") as writer:
        writer.wait_beyond(2)
        assert writer.proc.wait(timeout=60) == 0
    assert Path(f"{copy}-wal").stat().st_size > 0
    state = tmp_path / "state"
    assert main(["restore", str(copy), "--state-dir", str(state)]) == 0
    assert batches(state / "nightshift.db") == {1: BATCH, 2: BATCH, 3: BATCH}


def test_restore_of_a_plain_copy_leaves_nothing_beside_it(tmp_path: Path) -> None:
    """A cleanly closed database copied with cp (its header still says WAL) is only read."""
    new_database(tmp_path / "live" / "nightshift.db", megabytes=0.2)
    copy = tmp_path / "copy.db"
    copy.write_bytes((tmp_path / "live" / "nightshift.db").read_bytes())
    assert main(["restore", str(copy), "--state-dir", str(tmp_path / "state")]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy.db", "live", "state"]
