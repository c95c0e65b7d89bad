"""FileWatcher against real files and directories and real inotify (watchdog)."""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from pydantic import ValidationError

from daemon.core.clock import ManualClock
from daemon.watchers.files import FileWatcher, FileWatchSettings
from tests.daemon.watchers.inotify_limits import run_limited, userns_available
from tests.daemon.watchers.recorder import Recorder, running

QUIET = 0.6  # long enough for a coalesced modification (0.2 s) and an inspection to show up


@asynccontextmanager
async def watching(recorder: Recorder, *paths: Path, **options: object) -> AsyncIterator[None]:
    options.setdefault("recheck_seconds", 0.1)
    settings = FileWatchSettings.model_validate(
        {"name": "cfg", "paths": [str(p) for p in paths], **options}
    )
    watcher = FileWatcher(settings, ManualClock())
    async with running(watcher, recorder):
        await watcher.ready.wait()
        yield


def changes(recorder: Recorder) -> list[tuple[str, str]]:
    """(kind, path name) of every file_changed so far."""
    return [(o.text, Path(o.labels["path"]).name) for o in recorder.of("file_changed")]


async def until(recorder: Recorder, kind: str, path: Path, after: int = 0) -> None:
    await recorder.wait_for("file_changed", lambda o: o.text == kind, after=after, path=str(path))


async def test_created_modified_deleted_in_a_directory(tmp_path: Path) -> None:
    recorder = Recorder()
    target = tmp_path / "app.conf"
    async with watching(recorder, tmp_path):
        target.write_text("a = 1\n")
        await until(recorder, "created", target)
        with target.open("a") as handle:
            handle.write("b = 2\n")
        await until(recorder, "modified", target)
        target.unlink()
        await until(recorder, "deleted", target)
    observation = recorder.of("file_changed")[0]
    assert observation.labels == {"path": str(target), "watch": "cfg"}
    assert observation.source == "file:cfg"
    kinds = [kind for kind, _ in changes(recorder)]
    assert kinds[0] == "created" and kinds[-1] == "deleted"


async def test_a_burst_of_writes_is_one_modification(tmp_path: Path) -> None:
    target = tmp_path / "app.conf"
    target.write_text("")
    recorder = Recorder()
    async with watching(recorder, tmp_path):
        with target.open("a") as handle:
            for n in range(200):
                handle.write(f"{n}\n")
                handle.flush()
        await until(recorder, "modified", target)
        await asyncio.sleep(QUIET)
    assert changes(recorder) == [("modified", "app.conf")]


async def test_chmod_is_permissions_and_touch_is_nothing(tmp_path: Path) -> None:
    target = tmp_path / "secret.key"
    target.write_text("k")
    target.chmod(0o600)
    recorder = Recorder()
    async with watching(recorder, target):
        os.utime(target)  # attribute event, but mode and owner are unchanged
        await asyncio.sleep(QUIET)
        assert changes(recorder) == []
        target.chmod(0o644)
        await until(recorder, "permissions", target)


async def test_checksum_reports_content_changes_only(tmp_path: Path) -> None:
    target = tmp_path / "nginx.conf"
    target.write_text("worker_processes 1;\n")
    recorder = Recorder()
    async with watching(recorder, target, checksum=True):
        target.write_text("worker_processes 4;\n")
        await until(recorder, "checksum", target)
        mark = len(recorder.seen)
        target.write_text("worker_processes 4;\n")  # rewritten, same bytes
        target.chmod(0o600)
        await until(recorder, "permissions", target)
        await asyncio.sleep(QUIET)
        assert [o.text for o in recorder.seen[mark:]] == ["modified", "permissions"]
        mark = len(recorder.seen)
        replacement = tmp_path / ".nginx.conf.tmp"  # an editor's atomic save: write, rename over
        replacement.write_text("worker_processes 8;\n")
        replacement.replace(target)
        await until(recorder, "checksum", target, after=mark)
        # the new file also came with the editor's mode (0644 after our 0600): both are reported
        assert [o.text for o in recorder.seen[mark:]] == ["created", "permissions", "checksum"]
    assert changes(recorder)[:2] == [("modified", "nginx.conf"), ("checksum", "nginx.conf")]


async def test_files_over_the_size_limit_are_not_hashed(tmp_path: Path) -> None:
    big = tmp_path / "big.img"
    big.write_bytes(b"\0" * (2 << 20))
    recorder = Recorder()
    async with watching(recorder, big, checksum=True, checksum_max_mb=1):
        with big.open("r+b") as handle:
            handle.write(b"changed")
        await until(recorder, "modified", big)
        await asyncio.sleep(QUIET)
    assert changes(recorder) == [("modified", "big.img")]


async def test_a_watched_file_deleted_and_recreated(tmp_path: Path) -> None:
    target = tmp_path / "app.conf"
    target.write_text("x")
    (tmp_path / "other.conf").write_text("")
    recorder = Recorder()
    async with watching(recorder, target):
        target.unlink()
        await until(recorder, "deleted", target)
        (tmp_path / "other.conf").write_text("not watched")
        target.write_text("back")
        await until(recorder, "created", target)
    assert "other.conf" not in [name for _, name in changes(recorder)]
    assert recorder.of("watcher_error") == []


async def test_patterns_recursion_and_event_selection(tmp_path: Path) -> None:
    sub = tmp_path / "sub"
    sub.mkdir()
    recorder = Recorder()
    async with watching(recorder, tmp_path, patterns=["*.conf"], events=["created", "deleted"]):
        (tmp_path / "notes.txt").write_text("x")
        (sub / "deep.conf").write_text("x")
        (tmp_path / "top.conf").write_text("x")
        await until(recorder, "created", tmp_path / "top.conf")
        with (tmp_path / "top.conf").open("a") as handle:
            handle.write("y")  # "modified" is not selected
        (tmp_path / "top.conf").unlink()
        await until(recorder, "deleted", tmp_path / "top.conf")
    assert changes(recorder) == [("created", "top.conf"), ("deleted", "top.conf")]

    recorder = Recorder()
    async with watching(recorder, tmp_path, recursive=True, patterns=["*.conf"]):
        (sub / "deep.conf").write_text("changed")
        await until(recorder, "modified", sub / "deep.conf")
        (sub / "deeper").mkdir()
        await asyncio.sleep(0.1)
        (sub / "deeper" / "x.conf").write_text("new")
        await until(recorder, "created", sub / "deeper" / "x.conf")


async def test_a_path_missing_at_start_is_an_error_until_it_appears(tmp_path: Path) -> None:
    target = tmp_path / "later.conf"
    recorder = Recorder()
    async with watching(recorder, target):
        error = await recorder.wait_for("watcher_error", lambda o: o.value == 1.0)
        assert error.labels["target"] == str(target) and str(target) in error.text
        target.write_text("x")
        await until(recorder, "created", target)
        await recorder.wait_for("watcher_error", lambda o: o.value == 0.0, target=str(target))
        mark = len(recorder.seen)
        with target.open("a") as handle:
            handle.write("y")
        await recorder.wait_for("file_changed", lambda o: o.text == "modified", after=mark)


async def test_a_deleted_directory_is_reported_and_watched_again(tmp_path: Path) -> None:
    watched = tmp_path / "conf.d"
    watched.mkdir()
    (watched / "a.conf").write_text("x")
    recorder = Recorder()
    async with watching(recorder, watched):
        shutil.rmtree(watched)
        error = await recorder.wait_for("watcher_error", lambda o: o.value == 1.0)
        assert error.labels["target"] == str(watched) and "deleted" in error.text
        assert ("deleted", "a.conf") in changes(recorder)
        watched.mkdir()
        await recorder.wait_for("watcher_error", lambda o: o.value == 0.0)
        await until(recorder, "created", watched)
        (watched / "b.conf").write_text("x")
        await until(recorder, "created", watched / "b.conf")


async def test_cancel_stops_every_watchdog_thread(tmp_path: Path) -> None:
    from watchdog.utils import BaseThread

    before = set(threading.enumerate())
    recorder = Recorder()
    async with watching(recorder, tmp_path, tmp_path / "missing", checksum=True):
        assert any(isinstance(t, BaseThread) for t in threading.enumerate())
    leaked = [t for t in set(threading.enumerate()) - before if isinstance(t, BaseThread)]
    assert leaked == []


needs_userns = pytest.mark.skipif(not userns_available(), reason="needs `unshare -Ur`")


@needs_userns
@pytest.mark.parametrize("scenario", ["files-instances", "files-instances-at-start"])
async def test_inotify_instance_limit_is_named_and_recovered_from(
    tmp_path: Path, scenario: str
) -> None:
    """One watcher-wide error whether watchdog hits the limit at schedule (7.1.1) or start."""
    seen = await run_limited(scenario, tmp_path)
    errors = [o for o in seen if o["metric"] == "watcher_error"]
    assert all("target" not in o for o in errors), errors
    assert "fs.inotify.max_user_instances" in str(errors[0]["text"])
    assert [o["value"] for o in errors] == [1.0, 0.0]
    assert any(o["text"] == "created" for o in seen)


@needs_userns
async def test_inotify_watch_limit_is_named_per_path(tmp_path: Path) -> None:
    seen = await run_limited("files-watches", tmp_path)
    error = next(o for o in seen if o["metric"] == "watcher_error")
    assert error["target"] == str(tmp_path / "second")
    assert "fs.inotify.max_user_watches" in str(error["text"])
    assert any(o["metric"] == "file_changed" and str(o["path"]).endswith("b.conf") for o in seen)


def test_settings_name_what_is_wrong() -> None:
    with pytest.raises(ValidationError, match="must be absolute"):
        FileWatchSettings(name="cfg", paths=["etc/nginx"])
    with pytest.raises(ValidationError, match="events"):
        FileWatchSettings.model_validate({"name": "cfg", "paths": ["/etc"], "events": ["moved"]})
    with pytest.raises(ValidationError, match="patterns"):
        FileWatchSettings(name="cfg", paths=["/etc"], patterns=[" "])
    settings = FileWatchSettings(name="cfg", paths=["/etc/", "/etc"])
    assert settings.paths == ["/etc"] and settings.events == [
        "created",
        "modified",
        "deleted",
        "permissions",
    ]
