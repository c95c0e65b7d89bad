"""`nightshift` command line: run the daemon, and talk to a running one."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import faulthandler
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from daemon import __version__
from daemon.cli.render import (
    render_status,
    render_toml,
)
from daemon.core.errors import EXIT_CONFIG, ConfigError

log = logging.getLogger("nightshift")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nightshift", description="A proactive always-on ops agent for Linux hosts."
    )
    parser.add_argument("--version", action="version", version=f"nightshift {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def with_location(sub: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sub.add_argument("--config", type=Path, help="TOML config file (default: embedded)")
        sub.add_argument("--state-dir", type=Path, help="state directory (database, socket)")
        return sub

    run = with_location(commands.add_parser("run", help="run the daemon in the foreground"))
    run.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])

    check = commands.add_parser("check-config", help="validate a config and print it, masked")
    check.add_argument("path", nargs="?", type=Path, help="config file (default: embedded)")
    check.add_argument("--config", type=Path, help="the same, as the other commands take it")
    check.add_argument("--state-dir", type=Path)

    status = with_location(commands.add_parser("status", help="show a running daemon's health"))
    status.add_argument("--json", action="store_true", help="machine-readable output")

    chat = with_location(commands.add_parser("chat", help="talk to the agent"))
    chat.add_argument("-m", "--message", help="send one message, print the answer, exit")
    chat.add_argument("--conversation", help="conversation name (default: one per local user)")

    with_location(commands.add_parser("doctor", help="check config, database, LLM, permissions"))
    with_location(commands.add_parser("approvals", help="list pending approval requests"))
    for verb in ("approve", "deny"):
        sub = with_location(commands.add_parser(verb, help=f"{verb} a pending privileged action"))
        sub.add_argument("id", help="approval id (see `nightshift approvals`)")
    with_location(commands.add_parser("reload", help="re-read the config (same as SIGHUP)"))
    pair = with_location(commands.add_parser("pair", help="a one-time code that binds a chat user"))
    pair.add_argument("--role", choices=["viewer", "operator", "admin"], default="viewer")

    incidents = with_location(commands.add_parser("incidents", help="list incidents, or show one"))
    incidents.add_argument("action", nargs="?", choices=["list", "show"], default="list")
    incidents.add_argument("id", nargs="?", help="incident number (with show)")
    silence = with_location(commands.add_parser("silence", help="add, list or expire silences"))
    silence_commands = silence.add_subparsers(
        dest="silence_command", metavar="ACTION", required=True
    )
    add = silence_commands.add_parser("add", help="silence matching alerts for a while")
    add.add_argument("what", nargs="+", help="an incident number, or matchers like alertname=X")
    add.add_argument("--for", dest="duration", required=True, help="e.g. 30m, 1.5h, 1h30m, 2d")
    add.add_argument("-c", "--comment", default="", help="why (shown in `silence list`)")
    located(silence_commands.add_parser("list", help="active and recent silences"))
    expire = silence_commands.add_parser("expire", help="end a silence now")
    expire.add_argument("id", help="silence number")
    for sub in (add, expire):
        located(sub)

    _task_parsers(with_location(commands.add_parser("tasks", help="scheduled tasks")))
    from daemon.cli.memory import add_parser as memory_parsers

    memory_parsers(
        commands.add_parser("memory", help="search what it remembers, curate its facts"),
        with_location,
    )
    from daemon.cli.runs import add_parser as runs_parsers

    runs_parsers(commands, with_location)

    backup = with_location(
        commands.add_parser("backup", help="copy the database, safely while the daemon runs")
    )
    backup.add_argument("path", type=Path, help="the backup file to write (mode 0600)")
    backup.add_argument("--force", action="store_true", help="overwrite PATH if it exists")
    restore = with_location(
        commands.add_parser("restore", help="replace the database by a backup (daemon stopped)")
    )
    restore.add_argument("path", type=Path, help="a file written by `nightshift backup`")

    slack = commands.add_parser("slack", help="Slack helpers")
    slack_commands = slack.add_subparsers(dest="slack_command", metavar="SUBCOMMAND", required=True)
    manifest = slack_commands.add_parser("manifest", help="print the Slack app manifest")
    manifest.add_argument("--name", default="nightshift", help="the app's display name")

    install = commands.add_parser("install-service", help="install the systemd unit")
    install.add_argument("--dry-run", action="store_true", help="print the unit, write nothing")
    install.add_argument("--unit-dir", type=Path, default=Path("/etc/systemd/system"))
    install.add_argument("--exec-path", help="absolute path of the nightshift executable")
    return parser


def located(sub: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """--config/--state-dir on an action (`silence add`, `tasks show`) as well as before it."""
    # SUPPRESS: a --state-dir given before the action is not reset by the action's default
    sub.add_argument("--config", type=Path, default=argparse.SUPPRESS, help="TOML config")
    sub.add_argument("--state-dir", type=Path, default=argparse.SUPPRESS)
    return sub


def _task_parsers(tasks: argparse.ArgumentParser) -> None:
    """`nightshift tasks [list] | show | add | pause | resume | remove | run-now`."""

    actions = tasks.add_subparsers(dest="tasks_command", metavar="ACTION")
    located(actions.add_parser("list", help="every task with its next and last run (default)"))
    show = located(actions.add_parser("show", help="a task's definition and its last 20 runs"))
    show.add_argument("name")
    add = located(actions.add_parser("add", help="add a task (runs until removed)"))
    add.add_argument("name", help="lowercase letters, digits, - _ . (e.g. disk-report)")
    when = add.add_mutually_exclusive_group(required=True)
    when.add_argument("--cron", help='crontab line, e.g. "0 9 * * mon-fri" (0 and 7 = Sunday)')
    when.add_argument("--every", help="interval, e.g. 15m, 1.5h, 1h30m, 1d")
    when.add_argument("--at", help="once, ISO 8601, e.g. 2026-12-01T09:00 (in --tz) or …Z")
    add.add_argument("--tz", help="IANA time zone, e.g. Europe/Berlin (default [scheduler])")
    what = add.add_mutually_exclusive_group(required=True)
    what.add_argument("--prompt", help="ask the agent this (unattended)")
    what.add_argument(  # dest: `command` is the subcommand's name
        "--command", dest="program", help='run this program, no shell: "/path/prog arg"'
    )
    add.add_argument("--to", help="where results go: console, slack:C0OPS, telegram:123 …")
    add.add_argument("--precheck", help="runs first; exit 0 = work to do, 1 = nothing to do")
    add.add_argument("--catch-up", choices=["skip", "once", "each"], help="slots missed while down")
    for verb, text in (
        ("pause", "stop a task until it is resumed"),
        ("resume", "resume a paused task"),
        ("remove", "delete a task and its run history"),
        ("run-now", "run a task once now, outside its schedule"),
    ):
        sub = located(actions.add_parser(verb, help=text))
        sub.add_argument("name")
        if verb == "pause":
            sub.add_argument("--reason", default="", help="shown in `nightshift tasks`")


# Chat forms the CLI takes as they are printed in hints (`unsilence 1`, `silence 3 2h why`,
# `tasks add NAME every 1h prompt …`, `tasks run NAME`): sent to the daemon like chat commands.
_CHAT_ONLY = frozenset({"unsilence", "silences", "incident"})
_CLI_SILENCE = frozenset({"add", "list", "expire"})
_LOCATION = frozenset({"--config", "--state-dir"})


def chat_form(argv: list[str]) -> tuple[list[str], str] | None:
    """(location options, command text) when ``argv`` is a command written as in chat."""
    location: list[str] = []
    words: list[str] = []
    rest = iter(argv)
    for arg in rest:
        name = arg.split("=", 1)[0]
        if name in _LOCATION:
            location += [arg] if "=" in arg else [arg, next(rest, "")]
        else:
            words.append(arg)
    if not words:
        return None
    first, second = words[0], words[1] if len(words) > 1 else ""
    chat = (
        first in _CHAT_ONLY
        or (first == "silence" and second not in _CLI_SILENCE and not second.startswith("-"))
        or (first == "tasks" and second in ("add", "run", "help")
            and not any(w.startswith("--") for w in words))
    )  # fmt: skip
    return (location, " ".join(words)) if chat and second not in ("-h", "--help") else None


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(sys.argv[1:] if argv is None else argv)
    except BrokenPipeError:  # `nightshift slack manifest | head`: the reader had enough
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _main(argv: list[str]) -> int:
    as_chat = chat_form(argv)
    if as_chat is not None:
        location, text = as_chat
        return _chat_command(build_parser().parse_args(["incidents", *location]), text)
    args = build_parser().parse_args(argv)
    handler = HANDLERS[args.command]
    try:
        return handler(args)
    except ConfigError as exc:
        print(f"nightshift: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130


def _settings(args: argparse.Namespace, config: Path | None = None) -> Any:
    from daemon.config import default_config_path, load_settings

    path = config if config is not None else getattr(args, "config", None)
    if path is None:
        path = default_config_path()
    return load_settings(path, state_dir=getattr(args, "state_dir", None)), path


def _client_settings(args: argparse.Namespace) -> Any:
    """Settings for finding a running daemon; a broken config file on disk must not stop that."""
    from daemon.config import load_settings

    try:
        return _settings(args)[0]
    except ConfigError as exc:
        print(
            f"nightshift: warning: {exc}\nnightshift: looking for the daemon with the default "
            "socket name in the state directory",
            file=sys.stderr,
        )
        return load_settings(None, state_dir=args.state_dir)


def cmd_run(args: argparse.Namespace) -> int:
    settings, path = _settings(args)
    if args.log_level:
        settings.runtime.log_level = args.log_level
    setup_logging(settings.runtime.log_level)
    os.umask(0o077)  # the database, socket and lock are the owner's alone
    faulthandler.enable()  # a watchdog SIGABRT then prints where the loop was stuck
    from daemon.runtime.process import run_daemon

    log.info(
        "starting nightshift %s, config %s, state %s",
        __version__,
        path or "(embedded defaults)",
        settings.state_dir,
    )
    from daemon.config import Settings
    from daemon.config.env import unknown_environment

    for name in unknown_environment(Settings):
        log.warning("$%s names no setting and is ignored (a typo?)", name)
    return asyncio.run(run_daemon(settings, path))


def cmd_check_config(args: argparse.Namespace) -> int:
    from daemon.config import Settings, masked_dump
    from daemon.config.env import unknown_environment
    from daemon.config.secrets import plain_toml_warnings

    settings, path = _settings(args, args.path or args.config)
    print(f"# {path or 'embedded defaults'}: valid. Effective configuration (secrets masked):")
    print(render_toml(masked_dump(settings)))
    for warning in plain_toml_warnings(settings, path):
        print(f"# warning: {warning}", file=sys.stderr)
    for name in unknown_environment(Settings):
        print(f"# warning: ${name} names no setting and is ignored (a typo?)", file=sys.stderr)
    available, reason = settings.agent_available
    if not available:
        print(f"# note: {reason}", file=sys.stderr)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    report = _ask_daemon(args, "GET", "/v1/status")
    if report is None:
        return 3  # LSB: program is not running
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(render_status(report))
    return 0 if report["health"] == "ok" else 1


def cmd_chat(args: argparse.Namespace) -> int:
    from daemon.cli.chat import run_chat

    settings = _client_settings(args)
    result = _call_daemon(lambda: run_chat(settings.socket_path, args.message, args.conversation))
    return 1 if result is None else int(result)


def cmd_doctor(args: argparse.Namespace) -> int:
    from daemon.cli.doctor import run_doctor

    try:
        settings, path = _settings(args)
    except ConfigError as exc:
        print(f"FAIL  config: {exc}")
        return EXIT_CONFIG
    return asyncio.run(run_doctor(settings, path))


def cmd_approvals(args: argparse.Namespace) -> int:
    pending = _ask_daemon(args, "GET", "/v1/approvals")
    if pending is None:
        return 3
    if not pending:
        print("no pending approvals")
    for item in pending:
        print(
            f"{item['id']}  {item['tool']} {json.dumps(item['arguments'])}  "
            f"asked by {item['actor']}, expires {item['expires_at']}"
        )
    return 0


def cmd_answer(args: argparse.Namespace) -> int:
    from daemon.core.errors import ApiError

    body = {"approve": args.command == "approve"}
    try:
        result = _ask_daemon(args, "POST", f"/v1/approvals/{args.id}", body)
    except ApiError as exc:
        print(f"nightshift: {exc}", file=sys.stderr)
        return 1
    if result is None:
        return 3
    print(f"{'approved' if result['approved'] else 'denied'} by {result['by']}")
    return 0


def cmd_reload(args: argparse.Namespace) -> int:
    result = _ask_daemon(args, "POST", "/v1/reload")
    if result is None:
        return 3
    if not result["ok"]:
        print(f"reload rejected; still running the old config:\n{result['error']}")
        return EXIT_CONFIG
    print(f"applied: {', '.join(result['applied']) or 'nothing changed'}")
    if result["needs_restart"]:
        print(f"needs a restart to take effect: {', '.join(result['needs_restart'])}")
    return 0


def cmd_slack(args: argparse.Namespace) -> int:
    from integrations.slack.manifest import slack_manifest

    print(slack_manifest(args.name))
    return 0


def cmd_pair(args: argparse.Namespace) -> int:
    result = _ask_daemon(args, "POST", "/v1/pair", {"role": args.role})
    if result is None:
        return 3
    print(
        f"Send this to the bot from the chat account to bind, within 10 minutes:\n\n"
        f"    pair {result['code']}\n\nIt grants the role {result['role']} and works once."
    )
    return 0


def cmd_incidents(args: argparse.Namespace) -> int:
    if args.action == "show" and not args.id:
        print("nightshift incidents show ID: give the incident number", file=sys.stderr)
        return 2
    text = "incidents" + (f" show {args.id}" if args.action == "show" else "")
    return _run_command(args, text)


def cmd_memory(args: argparse.Namespace) -> int:
    from daemon.cli import memory

    settings, _ = _settings(args)
    path, caps = settings.database_path, settings.memory.fact_caps()
    if args.memory_command == "facts":
        return memory.run_facts(path, args, caps)
    if args.memory_command == "forget":
        return memory.run_forget(path, args, caps)
    if args.memory_command == "compactions":
        return memory.run_compactions(path, args)
    if args.memory_command == "edit":
        return memory.run_edit(path, args, caps)
    return memory.run_search(path, args)


def cmd_runs(args: argparse.Namespace) -> int:
    from daemon.cli.runs import run_runs

    settings, _ = _settings(args)
    return run_runs(settings.database_path, args)


def cmd_silence(args: argparse.Namespace) -> int:
    if args.silence_command == "list":
        return _run_command(args, "silences")
    if args.silence_command == "expire":
        return _run_command(args, f"unsilence {args.id}")
    from daemon.core.durations import DurationError, parse_duration

    try:  # the daemon refuses it too (and checks the 30-day bound); this names the flag
        parse_duration(args.duration)
    except DurationError as exc:
        print(f"nightshift silence add: --for: {exc}", file=sys.stderr)
        return 2
    return _run_command(args, " ".join([*args.what, args.duration, args.comment]).strip())


def cmd_tasks(args: argparse.Namespace) -> int:
    action = args.tasks_command or "list"
    if action == "add":
        return _add_task(args)
    if action == "list":
        return _chat_command(args, "tasks")
    verb = {"run-now": "run"}.get(action, action)
    reason = f" {args.reason}" if action == "pause" and args.reason else ""
    return _chat_command(args, f"tasks {verb} {args.name}{reason}")


def _add_task(args: argparse.Namespace) -> int:
    from daemon.core.errors import ApiError, ScheduleError
    from daemon.core.schedule import parse_plain_interval

    body: dict[str, Any] = {"name": args.name}
    if args.every is not None:
        try:
            body["interval_seconds"] = parse_plain_interval(args.every)
        except ScheduleError as exc:
            print(f"nightshift tasks add: --every: {exc}", file=sys.stderr)
            return 2
    else:
        body.update({"cron": args.cron} if args.cron is not None else {"at": args.at})
    optional = {
        "timezone": args.tz,
        "prompt": args.prompt,
        "command": args.program,
        "deliver_to": args.to,
        "precheck": args.precheck,
        "catch_up": args.catch_up,
    }
    body.update({key: value for key, value in optional.items() if value is not None})
    try:
        result = _ask_daemon(args, "POST", "/v1/tasks", body)
    except ApiError as exc:
        print(f"nightshift tasks add: {exc}", file=sys.stderr)
        return 1
    if result is None:
        return 3
    print(result["text"])
    return 0


def _chat_command(args: argparse.Namespace, text: str) -> int:
    """Run ``text`` in the daemon as a chat command; 1 when it was refused."""
    result = _ask_daemon(args, "POST", "/v1/command", {"text": text})
    if result is None:
        return 3
    print(result["text"])
    return 0 if result.get("ok", True) else 1


def _run_command(args: argparse.Namespace, text: str) -> int:
    word = text.split()[0]
    if word not in ("incidents", "silences", "unsilence"):
        text = "silence " + text
    return _chat_command(args, text)


def cmd_backup(args: argparse.Namespace) -> int:
    from daemon.cli.backup import run_backup

    return run_backup(_settings(args)[0], args.path, force=args.force)


def cmd_restore(args: argparse.Namespace) -> int:
    from daemon.cli.backup import run_restore

    return run_restore(_settings(args)[0], args.path)


def cmd_install_service(args: argparse.Namespace) -> int:
    from daemon.cli.service import install_service

    return install_service(exec_path=args.exec_path, unit_dir=args.unit_dir, dry_run=args.dry_run)


def _call_daemon(factory: Any) -> Any:
    from daemon.core.errors import DaemonNotRunning

    try:
        return asyncio.run(factory())
    except DaemonNotRunning as exc:
        print(f"nightshift: {exc}", file=sys.stderr)
        return None


def _ask_daemon(
    args: argparse.Namespace, method: str, path: str, body: dict[str, Any] | None = None
) -> Any:
    """One request to the running daemon; None (after saying why) when it is not running."""
    from daemon.cli.client import DaemonClient

    settings = _client_settings(args)

    async def ask() -> Any:
        async with DaemonClient(settings.socket_path) as client:
            if method == "GET":
                return await client.get(path)
            return await client.post(path, body)

    from daemon.core.redact import redact_data

    return redact_data(_call_daemon(ask), by_key=False)  # everything shown is masked


HANDLERS = {
    "run": cmd_run,
    "check-config": cmd_check_config,
    "status": cmd_status,
    "chat": cmd_chat,
    "doctor": cmd_doctor,
    "approvals": cmd_approvals,
    "approve": cmd_answer,
    "deny": cmd_answer,
    "reload": cmd_reload,
    "install-service": cmd_install_service,
    "slack": cmd_slack,
    "pair": cmd_pair,
    "incidents": cmd_incidents,
    "silence": cmd_silence,
    "tasks": cmd_tasks,
    "memory": cmd_memory,
    "runs": cmd_runs,
    "backup": cmd_backup,
    "restore": cmd_restore,
}


def setup_logging(level: str) -> None:
    """One event per line on stderr, redacted; the journal adds its own timestamps."""
    from daemon.runtime.logs import setup_logging as setup

    setup(level)


if __name__ == "__main__":
    sys.exit(main())
