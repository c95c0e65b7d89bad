"""A real Synapse homeserver as a child process, for the Matrix contract tests.

Synapse lives in its own venv (``.ci/install-synapse``; ``$SYNAPSE_VENV`` overrides where).
:class:`Synapse` generates a config in a temporary directory, rewrites it for loopback, SQLite
and no rate limits, starts the server, waits for ``/_matrix/client/versions`` and registers users
through the shared-secret registration API (what ``register_new_matrix_user`` calls, without a
Python start-up per user). Everything here is synchronous: it runs in module-scoped fixtures.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SERVER_NAME = "localhost"
SHARED_SECRET = "nightshift-test-registration-secret"
START_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 10.0
_UNLIMITED = {"per_second": 10000, "burst_count": 10000}

# Run with Synapse's own Python (it has PyYAML): load the generated config, apply overrides.
_REWRITE = """
import json, sys, yaml
path, overrides = sys.argv[1], json.loads(sys.argv[2])
with open(path) as f:
    config = yaml.safe_load(f)
config.update(overrides)
with open(path, "w") as f:
    yaml.safe_dump(config, f)
"""


def synapse_venv() -> Path:
    return Path(os.environ.get("SYNAPSE_VENV", REPO / ".synapse-venv"))


def synapse_available() -> bool:
    """True when ``.ci/install-synapse`` has run (the venv has Synapse's Python)."""
    python = synapse_venv() / "bin" / "python"
    return python.exists() and (synapse_venv() / "bin" / "register_new_matrix_user").exists()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True, slots=True)
class MatrixUser:
    user_id: str
    password: str
    access_token: str
    device_id: str


class Synapse:
    """One homeserver in ``directory``: ``start()``, ``register(...)``, ``stop()``."""

    def __init__(self, directory: Path, *, port: int | None = None) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_path = directory / "hs.yaml"
        self._process: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    @property
    def python(self) -> str:
        return str(synapse_venv() / "bin" / "python")

    def generate(self) -> None:
        """Generate the config and keys, then rewrite it for tests."""
        self.directory.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                self.python, "-m", "synapse.app.homeserver", "--generate-config",
                "--server-name", SERVER_NAME, "--config-path", str(self.config_path),
                "--data-directory", str(self.directory), "--report-stats=no",
            ],
            cwd=self.directory, check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        overrides = {
            "listeners": [
                {
                    "port": self.port,
                    "bind_addresses": ["127.0.0.1"],
                    "type": "http",
                    "tls": False,
                    "x_forwarded": False,
                    "resources": [{"names": ["client"], "compress": False}],
                }
            ],
            "database": {
                "name": "sqlite3",
                "args": {"database": str(self.directory / "homeserver.db")},
            },
            "enable_registration": False,
            "registration_shared_secret": SHARED_SECRET,
            "report_stats": False,
            "trusted_key_servers": [],
            "suppress_key_server_warning": True,
            "presence": {"enabled": False},
            "rc_message": _UNLIMITED,
            "rc_registration": _UNLIMITED,
            "rc_login": {
                "address": _UNLIMITED,
                "account": _UNLIMITED,
                "failed_attempts": _UNLIMITED,
            },
            "rc_joins": {"local": _UNLIMITED, "remote": _UNLIMITED},
            "rc_joins_per_room": _UNLIMITED,
            "rc_invites": {
                "per_room": _UNLIMITED,
                "per_user": _UNLIMITED,
                "per_issuer": _UNLIMITED,
            },
            "rc_admin_redaction": _UNLIMITED,
            "rc_3pid_validation": _UNLIMITED,
            "rc_room_creation": _UNLIMITED,
        }
        subprocess.run(
            [self.python, "-c", _REWRITE, str(self.config_path), json.dumps(overrides)],
            check=True, capture_output=True, timeout=30,
        )  # fmt: skip

    def start(self) -> None:
        """Start the server and wait until the client API answers."""
        if not self.config_path.exists():
            self.generate()
        self._log = (self.directory / "stdout.log").open("ab")
        self._process = subprocess.Popen(
            [self.python, "-m", "synapse.app.homeserver", "--config-path", str(self.config_path)],
            cwd=self.directory, stdout=self._log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            if self._process.poll() is not None:
                self._close_log()
                raise RuntimeError(f"Synapse exited with {self._process.returncode}: {self.tail()}")
            try:
                self._request("GET", "/_matrix/client/versions")
                return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"Synapse did not answer in time: {self.tail()}") from None
                time.sleep(0.1)

    def stop(self) -> None:
        """Terminate (SIGTERM), wait; kill after a timeout."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._close_log()

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def register(
        self, localpart: str, password: str = "secret-pw", *, admin: bool = False
    ) -> MatrixUser:
        """Create a user with the shared secret (like ``register_new_matrix_user``)."""
        nonce = self._request("GET", "/_synapse/admin/v1/register")["nonce"]
        body = {
            "nonce": nonce,
            "username": localpart,
            "password": password,
            "admin": admin,
            "mac": _mac(nonce, localpart, password, admin),
        }
        answer = self._request("POST", "/_synapse/admin/v1/register", body)
        return MatrixUser(
            user_id=answer["user_id"],
            password=password,
            access_token=answer["access_token"],
            device_id=answer["device_id"],
        )

    def tail(self, lines: int = 30) -> str:
        path = self.directory / "homeserver.log"
        if not path.exists():
            path = self.directory / "stdout.log"
        with contextlib.suppress(OSError):
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Synapse:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _mac(nonce: str, user: str, password: str, admin: bool) -> str:
    """HMAC-SHA1 over the fields joined by NULs (Synapse's shared-secret registration)."""
    mac = hmac.new(SHARED_SECRET.encode(), digestmod=hashlib.sha1)
    mac.update(b"\x00".join(
        part.encode() for part in (nonce, user, password, "admin" if admin else "notadmin")
    ))  # fmt: skip
    return mac.hexdigest()
