"""The API's listener guards: the connection cap, the rate-limited warnings, and asyncio's
accept() EMFILE turned into one line — the last for real, in a child process whose open-file
limit runs out."""

from __future__ import annotations

import asyncio
import logging
import sys
import textwrap

import pytest

from daemon.runtime.http_guard import FD_RESERVE, RateLimitedWarning, connection_cap
from tests.support import ROOT


def test_the_warning_is_logged_once_per_period_with_the_count_held_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [100.0]
    warn = RateLimitedWarning(every=60.0, now=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="daemon.runtime.http_guard"):
        assert warn("out of %s", "fds")
        now[0] += 30
        assert not warn("out of %s", "fds")
        assert not warn("out of %s", "fds")
        now[0] += 30
        assert warn("out of %s", "fds")
    assert caplog.messages == ["out of fds", "out of fds (2 more since the last warning)"]


def test_the_cap_stays_below_the_open_file_limit(caplog: pytest.LogCaptureFixture) -> None:
    assert connection_cap(256, 65536) == 256
    with caplog.at_level(logging.WARNING, logger="daemon.runtime.http_guard"):
        assert connection_cap(256, 256) == 256 - FD_RESERVE
    assert "api.max_connections = 256 but the open-file limit is 256" in caplog.text
    assert "raise LimitNOFILE" in caplog.text
    assert connection_cap(256, 100) == 8  # never below a handful


SERVER = textwrap.dedent(
    """
    import asyncio, logging, resource, sys
    from daemon.runtime.http_guard import install_accept_guard

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(message)s")

    async def hold(reader, writer):
        writer.write(b"hello\\n")
        await writer.drain()
        await reader.read()  # until the client closes
        writer.close()

    async def main():
        install_accept_guard(asyncio.get_running_loop())
        server = await asyncio.start_server(hold, "127.0.0.1", 0, backlog=200)
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (48, hard))
        print(server.sockets[0].getsockname()[1], flush=True)
        await asyncio.sleep(3600)

    asyncio.run(main())
    """
)


async def test_accept_out_of_fds_is_one_warning_line_and_serving_resumes() -> None:
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        SERVER,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert child.stdout is not None and child.stderr is not None
    try:
        port = int(await asyncio.wait_for(child.stdout.readline(), 30))
        conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(80)]
        stderr: list[str] = []
        async with asyncio.timeout(30):
            while not any("out of file descriptors" in line for line in stderr):
                stderr.append((await child.stderr.readline()).decode())
        assert "EMFILE" in stderr[-1] and "open-file limit 48" in stderr[-1]
        for _, writer in conns:
            writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(reader.readline(), 30) == b"hello\n"  # serving again
        writer.close()
    finally:
        child.terminate()
        _, rest = await child.communicate()
    log = "".join(stderr) + rest.decode()
    assert "Traceback" not in log and "socket.accept() out of system resource" not in log, log
    assert log.count("out of file descriptors") == 1, log
