"""The read-only tier against a hostile model: scripted tool calls through the Chat Completions
fake, the real executor, real tools, real SQLite and real bubblewrap.

Each attack is one from the issue. The first layer (classification) refuses what it can see;
the forced-misclassification cases configure a writer or an unknown reader as read-only and
show the kernel (the sandbox) refusing anyway. The whole module runs again as a plain user and
in a hardened, systemd-like setting (see the last tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from daemon.agent import sandbox
from daemon.agent.build import build_agent, build_llm
from daemon.agent.llm import LlmClient
from daemon.agent.loop import AgentLoop, AgentRequest
from daemon.agent.policy import classify_command, decide
from daemon.agent.settings import PolicySettings
from daemon.agent.tools import commands, evidence, files
from daemon.agent.tools.base import Tier, ToolContext, ToolRegistry
from daemon.chat.approvals import ApprovalBroker
from daemon.config import Settings, load_settings
from daemon.core.clock import SystemClock
from memory.conversations import ConversationRepo
from memory.store import SqliteStore
from memory.usage import UsageRepo
from tests.fakes.chat_completions import FakeChatServer, Reply

ROOT = Path(__file__).resolve().parents[3]
CHILD_ENV = "NIGHTSHIFT_SANDBOX_TEST_CHILD"
CANARY = "CANARY-4711-denied-content"
SQLITE_HEADER = b"SQLite format 3\x00"
AT_FDCWD, RENAME_EXCHANGE = -100, 2

needs_sandbox = pytest.mark.skipif(
    not sandbox.probe().available, reason=f"no sandbox here: {sandbox.probe().detail}"
)


@dataclass
class Rig:
    """A daemon's agent as the model meets it, over a temporary host layout:

    allowed/            the only read path
      app.log           ordinary content
      shadow, shadow-   a denied file and its backup sibling (both hold the canary)
      creds/            [state] secrets_dir, under the read path
      state/            the state directory, with the live SQLite database
    """

    fake: FakeChatServer
    allowed: Path
    settings: Settings
    store: SqliteStore
    loop: AgentLoop
    conversations: ConversationRepo
    broker: ApprovalBroker

    @property
    def database(self) -> Path:
        return self.settings.database_path

    async def call(self, tool: str, arguments: dict[str, Any], *, unattended: bool = True) -> str:
        """One scripted tool call in an unattended run (a task); what the tool answered."""
        self.fake.script(Reply(tool_calls=[(tool, json.dumps(arguments))]), Reply(content="ok"))
        conversation = await self.conversations.get_or_create("test", "c1")
        request = AgentRequest(
            conversation_id=conversation.id, text="go", actor="task:t", unattended=unattended
        )
        await asyncio.wait_for(self.loop.run(request), 60)
        request_body = self.fake.requests[-1]
        return str([m for m in request_body["messages"] if m["role"] == "tool"][-1]["content"])

    def ctx(self) -> ToolContext:
        return ToolContext(actor="t", reason="t", settings=self.settings, clock=SystemClock())


def make_settings(fake: FakeChatServer, allowed: Path, **policy: Any) -> Settings:
    defaults = PolicySettings().read_only_commands
    return load_settings(
        None,
        overrides={
            "llm": {"base_url": fake.base_url, "api_key": "sk-test", "max_retries": 0},
            "agent": {"tool_timeout_seconds": 30},
            "state": {"dir": str(allowed / "state"), "secrets_dir": str(allowed / "creds")},
            "policy": {
                "read_paths": [str(allowed), "/proc"],
                "deny_paths": [str(allowed / "shadow")],
                "read_only_commands": [*defaults, *policy.pop("extra_read_only", [])],
                **policy,
            },
        },
        environ_secrets=False,
    )


@pytest.fixture
async def rig_factory(tmp_path: Path, fake_llm: FakeChatServer) -> AsyncIterator[Any]:
    opened: list[tuple[SqliteStore, LlmClient]] = []
    allowed = tmp_path / "allowed"
    (allowed / "state").mkdir(parents=True)
    (allowed / "creds").mkdir()
    (allowed / "app.log").write_text("line one\nline two\n")
    (allowed / "shadow").write_text(f"root:{CANARY}:19000::::::\n")
    (allowed / "shadow-").write_text(f"root:{CANARY}:18000::::::\n")
    (allowed / "creds" / "llm__api_key").write_text(CANARY)

    async def make(**policy: Any) -> Rig:
        settings = make_settings(fake_llm, allowed, **policy)
        clock = SystemClock()
        store = await SqliteStore.open(settings.database_path)
        llm = build_llm(settings, usage=UsageRepo(store, clock), clock=clock)
        opened.append((store, llm))
        broker = ApprovalBroker(clock)
        registry = ToolRegistry([*files.TOOLS, *commands.TOOLS, *evidence.TOOLS])
        conversations = ConversationRepo(store, clock)
        loop = build_agent(
            settings=settings,
            store=store,
            clock=clock,
            llm=llm,
            registry=registry,
            approvals=broker,
            conversations=conversations,
        )
        return Rig(fake_llm, allowed, settings, store, loop, conversations, broker)

    yield make
    for store, llm in opened:
        await llm.close()
        await store.close()


async def assert_database_intact(rig: Rig) -> None:
    assert rig.database.read_bytes()[:16] == SQLITE_HEADER
    conversation = await rig.conversations.get_or_create("test", "c1")
    assert conversation.id  # the committed rows are still there and readable


# -- the first filter: option arguments and abbreviated long options --------------------------


@pytest.mark.parametrize(
    "command",
    [
        "date -f {shadow}",
        "date -f{shadow}",
        "date --fi={shadow}",
        "date --reference {shadow}",
        "dmesg -F {shadow}",
        "dmesg --fil {shadow}",
        "wc --files0-from={shadow}",
        "wc --files0={shadow}",
        "du --exclude-from {shadow} /tmp",
        "ss -F {shadow}",
        "journalctl --file {shadow}",
        "journalctl -D {state}",
        "journalctl --dir={state}",
        "cat {shadow}-",
        "tail -n 5 {state}/nightshift.db",
    ],
)
def test_option_arguments_naming_files_pass_the_read_policy(tmp_path: Path, command: str) -> None:
    policy = PolicySettings(read_paths=[str(tmp_path), "/tmp"], deny_paths=[f"{tmp_path}/shadow"])
    hidden = (f"{tmp_path}/state",)
    argv = command.format(shadow=tmp_path / "shadow", state=tmp_path / "state")
    assert classify_command(argv, policy, hidden=hidden) is Tier.PRIVILEGED
    allowed = argv.replace(str(tmp_path / "shadow") + "-", "/tmp/ok")
    allowed = allowed.replace(str(tmp_path / "shadow"), "/tmp/ok")
    allowed = allowed.replace(str(tmp_path / "state"), "/tmp/ok")
    assert classify_command(allowed, policy, hidden=hidden) is Tier.READ_ONLY, allowed


@pytest.mark.parametrize(
    "command",
    [
        "journalctl --vac=1",
        "journalctl --vacuum-s=1K",
        "journalctl --rot",
        "journalctl --cursor-file=/tmp/c",
        "date --se=2020-01-01",
        "date --s 2020-01-01",
        "date -s2020-01-01",
        "dmesg --cl",
        "dmesg -Dn1",
        "ss -D /tmp/out",
        "ss --diag=/tmp/out",
        "ss --ki",
        "ss -tK",
        "df --no-such-option",
    ],
)
def test_abbreviated_and_glued_options_that_write_are_privileged(command: str) -> None:
    assert classify_command(command, PolicySettings()) is Tier.PRIVILEGED


@pytest.mark.parametrize(
    "command",
    ["journalctl -u nginx -n 50", "date --iso=seconds", "ss -tlnp", "df -h", "du -sh /tmp"],
)
def test_ordinary_read_only_commands_stay_read_only(command: str) -> None:
    policy = PolicySettings(read_paths=["/tmp", "/var/log"])
    assert classify_command(command, policy) is Tier.READ_ONLY


def test_without_a_sandbox_the_read_only_tier_needs_a_person() -> None:
    assert decide(Tier.READ_ONLY, unattended=False, auto_approved=False).value == "allow"
    no_box = {"auto_approved": False, "sandboxed": False}
    assert decide(Tier.READ_ONLY, unattended=False, **no_box).value == "needs-approval"
    assert decide(Tier.READ_ONLY, unattended=True, **no_box).value == "deny"


# -- hostile tool calls through the fake model -------------------------------------------------


@needs_sandbox
async def test_ss_dump_onto_the_database_is_refused_and_nothing_is_lost(rig_factory: Any) -> None:
    rig = await rig_factory()
    answer = await rig.call("run_command", {"command": f"ss -D {rig.database}"})
    assert "denied at once" in answer
    await assert_database_intact(rig)


@needs_sandbox
async def test_a_writer_misconfigured_as_read_only_cannot_write(rig_factory: Any) -> None:
    """The classification is wrong on purpose: the kernel still refuses every write."""
    rig = await rig_factory(extra_read_only=["tee", "touch"])
    answer = await rig.call("run_command", {"command": f"tee {rig.database}"})
    assert "exit_code" in answer and "Read-only file system" in answer
    await assert_database_intact(rig)
    answer = await rig.call("run_command", {"command": f"touch {rig.allowed}/new"})
    assert "Read-only file system" in answer
    assert not (rig.allowed / "new").exists()


@needs_sandbox
@pytest.mark.parametrize(
    "command",
    ["date -f {shadow}", "dmesg -F {shadow}", "wc --files0-from={shadow}", "cat {shadow}-"],
)
async def test_option_arguments_cannot_read_denied_files(rig_factory: Any, command: str) -> None:
    rig = await rig_factory()
    answer = await rig.call(
        "run_command", {"command": command.format(shadow=rig.allowed / "shadow")}
    )
    assert CANARY not in answer and "denied at once" in answer


@needs_sandbox
@pytest.mark.parametrize(
    "target", ["shadow", "shadow-", "creds/llm__api_key", "state/nightshift.db"]
)
async def test_an_unknown_reader_configured_as_read_only_sees_nothing_hidden(
    rig_factory: Any, target: str
) -> None:
    """sed has no option table and is listed as read-only: the sandbox hides the file."""
    rig = await rig_factory(extra_read_only=["sed"])
    answer = await rig.call("run_command", {"command": f"sed -n p {rig.allowed / target}"})
    assert CANARY not in answer and "SQLite" not in answer
    assert '"exit_code": 0' not in answer
    await assert_database_intact(rig)


@needs_sandbox
@pytest.mark.parametrize("target", ["shadow-", "creds/llm__api_key", "state/nightshift.db"])
async def test_read_file_refuses_siblings_credentials_and_state(
    rig_factory: Any, target: str
) -> None:
    rig = await rig_factory()
    for tool in ("read_file", "tail_log"):
        answer = await rig.call(tool, {"path": str(rig.allowed / target)})
        assert answer.startswith("ERROR") and "denied" in answer and CANARY not in answer
    await assert_database_intact(rig)


@needs_sandbox
async def test_proc_self_mem_cannot_reach_the_daemons_memory(rig_factory: Any) -> None:
    rig = await rig_factory()
    secret = ctypes.create_string_buffer(f"{CANARY}-in-memory".encode())
    address = ctypes.addressof(secret)
    maps = await rig.call("read_file", {"path": "/proc/self/maps"})
    assert "no such process here" in maps and "[heap]" not in maps
    answer = await rig.call(
        "read_file", {"path": "/proc/self/mem", "offset": address, "max_bytes": 64}
    )
    assert CANARY not in answer and "no such process here" in answer
    assert secret.value.startswith(CANARY.encode())  # it was there to be found


@needs_sandbox
async def test_tail_log_of_proc_self_environ_shows_nothing(rig_factory: Any) -> None:
    rig = await rig_factory()
    answer = await rig.call("tail_log", {"path": "/proc/self/environ"})
    assert "PATH=" not in answer and "no such process here" in answer


@needs_sandbox
async def test_sandboxed_commands_see_only_their_own_processes(rig_factory: Any) -> None:
    rig = await rig_factory(extra_read_only=["ls /proc"])
    answer = await rig.call("run_command", {"command": "ls /proc"})
    pids = [int(word) for word in json.loads(answer)["stdout"].split() if word.isdigit()]
    assert str(os.getpid()) not in json.loads(answer)["stdout"].split()
    assert pids and max(pids) < 10  # a fresh pid namespace: bwrap's init and the command


@needs_sandbox
async def test_commands_have_no_network_unless_they_are_network_checks(rig_factory: Any) -> None:
    rig = await rig_factory(extra_read_only=["cat /proc/net/dev"])
    local = json.loads(await rig.call("run_command", {"command": "cat /proc/net/dev"}))
    assert [line.split(":")[0].strip() for line in local["stdout"].splitlines()[2:]] == ["lo"]
    host = json.loads(await rig.call("run_command", {"command": "ip addr"}))
    assert host["exit_code"] == 0


@needs_sandbox
async def test_ordinary_reads_still_work(rig_factory: Any) -> None:
    rig = await rig_factory()
    chunk = json.loads(await rig.call("read_file", {"path": str(rig.allowed / "app.log")}))
    assert chunk["content"] == "line one\nline two\n"
    tail = json.loads(await rig.call("tail_log", {"path": str(rig.allowed / "app.log")}))
    assert tail["text"] == "line one\nline two"
    grep = json.loads(
        await rig.call("grep_log", {"path": str(rig.allowed / "app.log"), "pattern": "two"})
    )
    assert grep["lines"] == ["line two"]
    df = json.loads(await rig.call("run_command", {"command": "uptime"}))
    assert df["exit_code"] == 0 and "load average" in df["stdout"]


async def test_without_a_sandbox_read_only_tools_need_approval(rig_factory: Any) -> None:
    rig = await rig_factory(sandbox="off")
    answer = await rig.call("read_file", {"path": str(rig.allowed / "app.log")})
    assert "sandbox is unavailable (turned off" in answer and "denied at once" in answer
    answer = await rig.call("run_command", {"command": "uptime"})
    assert "denied at once" in answer
    rig.broker.subscribe(lambda req: rig.broker.resolve(req.id, approved=True, by="console:bob"))
    answer = await rig.call("read_file", {"path": str(rig.allowed / "app.log")}, unattended=False)
    assert json.loads(answer)["content"] == "line one\nline two\n"  # a person said yes


@contextlib.contextmanager
def swapping(allowed: Path, denied: Path) -> Iterator[Path]:
    """allowed/swap flips between a real directory (file, inner/file: harmless) and a symlink to
    ``denied``, atomically (renameat2 RENAME_EXCHANGE), in a thread, until the block ends."""
    link, evil = allowed / "swap", allowed / "evil"
    (link / "inner").mkdir(parents=True)
    (link / "file").write_text("harmless")
    (link / "inner" / "file").write_text("harmless")
    evil.symlink_to(denied)
    libc = ctypes.CDLL(None, use_errno=True)
    stop = threading.Event()

    def swap() -> None:
        old, new = str(link).encode(), str(evil).encode()
        while not stop.is_set():
            assert libc.renameat2(AT_FDCWD, old, AT_FDCWD, new, RENAME_EXCHANGE) == 0

    swapper = threading.Thread(target=swap)
    swapper.start()
    try:
        yield link
    finally:
        stop.set()
        swapper.join()


@needs_sandbox
async def test_a_directory_symlink_swap_never_returns_a_denied_file(rig_factory: Any) -> None:
    """read_file runs again and again while a directory on its path is swapped for a symlink to
    a denied one: no read ever returns the denied file."""
    rig = await rig_factory()
    denied = rig.allowed / "shadow.d"  # covered by the deny of allowed/shadow
    denied.mkdir()
    (denied / "file").write_text(CANARY)
    leaked = harmless = 0
    with swapping(rig.allowed, denied) as link:
        for attempt in range(3000):  # at least 150, and until some reads landed on the directory
            if attempt >= 150 and harmless:
                break
            try:
                chunk = await files.read_file.invoke(rig.ctx(), {"path": f"{link}/file"})
            except Exception:  # noqa: BLE001 - refused or vanished mid-swap: both are fine
                continue
            leaked += CANARY in chunk.content
            harmless += chunk.content == "harmless"
    assert leaked == 0
    assert harmless > 0  # the reads did run while the swap went on


async def test_a_swap_never_lets_a_walk_list_a_denied_directory(rig_factory: Any) -> None:
    rig = await rig_factory()
    denied = rig.allowed / "shadow.d"
    (denied / "inner").mkdir(parents=True)
    (denied / "inner" / CANARY).write_text("x")
    leaked = listed = 0
    with swapping(rig.allowed, denied) as link:
        for attempt in range(3000):  # at least 300, and until some walks landed on the directory
            if attempt >= 300 and listed:
                break
            try:
                arguments = {"path": f"{link}/inner"}
                changes = await evidence.recent_file_changes.invoke(rig.ctx(), arguments)
            except Exception:  # noqa: BLE001 - refused mid-swap
                continue
            names = [Path(f.path).name for f in changes.files]
            leaked += CANARY in names
            listed += "file" in names
    assert leaked == 0
    assert listed > 0


# -- probing and failing closed ---------------------------------------------------------------


def test_a_missing_bwrap_is_reported_as_unavailable() -> None:
    status = sandbox.probe("/nonexistent/bwrap")
    assert not status.available
    assert "not found" in status.describe() and "read-only tools need approval" in status.describe()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to build a mount namespace")
def test_under_systemd_like_proc_masks_the_probe_fails_closed_and_says_why() -> None:
    """ProtectKernelTunables=/ProtectKernelLogs= mount over /proc; the kernel then refuses a
    fresh /proc in a user namespace. The probe says so instead of running unsandboxed."""
    script = (
        "mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys && exec "
        f"setpriv --reuid=65534 --regid=65534 --clear-groups --no-new-privs {sys.executable} "
        "-I -c 'import sys; sys.path.insert(0, sys.argv[1]); from daemon.agent.sandbox import "
        "probe; print(probe().describe())' " + str(ROOT)
    )
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("unavailable (") and "proc" in result.stdout
    assert "read-only tools need approval" in result.stdout


# -- the same module as a plain user, and in a hardened systemd-like setting --------------------


def _rerun(prefix: list[str], extra_setup: str = "") -> subprocess.CompletedProcess[str]:
    base = tempfile.mkdtemp(prefix="nightshift-sandbox-")
    os.chmod(base, 0o777)
    if extra_setup:  # a private /tmp hides the one above: make the same path inside it
        extra_setup += f" && mkdir -m 1777 -p {base}"
    pytest_cmd = [
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x",
        f"--basetemp={base}/t", str(Path(__file__)),
    ]  # fmt: skip
    env = {**os.environ, CHILD_ENV: "1", "PYTHONDONTWRITEBYTECODE": "1", "HOME": base}
    try:
        argv = [*prefix, *pytest_cmd]
        if extra_setup:
            argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                    extra_setup + ' && exec "$@"', "sh", *argv]  # fmt: skip
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=300, check=False, cwd=ROOT, env=env
        )
    finally:
        shutil.rmtree(base, ignore_errors=True)


PLAIN_USER = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def _private_tmp_setup() -> str:
    """Shell for a read-only root and a private /tmp, keeping this checkout and its venv
    visible when they live under /tmp (a CI clone in /tmp/ci, say)."""
    tmp = Path("/tmp")
    keep = sorted({p for p in (ROOT, Path(sys.prefix)) if p.is_relative_to(tmp)})
    steps = ["mount --bind / /", "mount -o remount,bind,ro /"]
    if keep:
        steps.append("mount --bind /tmp /mnt")
    steps.append("mount -t tmpfs -o mode=1777 tmpfs /tmp")
    for path in keep:
        inside = path.relative_to(tmp)
        steps += [f"mkdir -p /tmp/{inside}", f"mount --bind /mnt/{inside} /tmp/{inside}"]
    return " && ".join(steps)


root_parent = pytest.mark.skipif(
    os.geteuid() != 0 or CHILD_ENV in os.environ or shutil.which("setpriv") is None,
    reason="run as root (CI): the module re-runs itself as a plain user from there",
)


@needs_sandbox
@root_parent
def test_the_module_passes_as_a_plain_user() -> None:
    result = _rerun(PLAIN_USER)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "failed" not in result.stdout


@needs_sandbox
@root_parent
def test_the_module_passes_in_a_hardened_systemd_like_setting() -> None:
    """As the unit runs it: a plain user with no capabilities and no new privileges, the root
    filesystem read-only (ProtectSystem=strict), a private /tmp (PrivateTmp=)."""
    hardened = [*PLAIN_USER, "--no-new-privs", "--inh-caps=-all", "--bounding-set=-all"]
    result = _rerun(hardened, _private_tmp_setup())
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "failed" not in result.stdout
