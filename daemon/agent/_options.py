"""Option tables of the usual read-only commands, and a getopt_long-like parser over them.

The first filter of the read-only tier: GNU programs accept any unambiguous abbreviation of a
long option (``journalctl --vac=1`` is ``--vacuum-...``, ``date --se`` is ``--set``) and take
option values glued to the option (``date -f/etc/shadow``), so the policy parses the argv the
way the program will before it looks for options that write or name files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from daemon.core.errors import InputError

__all__ = ["SPECS", "Parsed", "Spec", "UnknownOption", "parse"]


class UnknownOption(InputError):
    """An option the table does not know (the program would refuse it, or we are out of date)."""


@dataclass(frozen=True, slots=True)
class Spec:
    """One program's options: all long ones, which take a value, which name files to read, and
    which write (spelled as given: "-f" or "--file")."""

    long: frozenset[str]
    long_value: frozenset[str] = frozenset()  # need a value: --name=V or --name V
    short_value: str = ""  # short options that need a value: -fV or -f V
    reads: frozenset[str] = frozenset()  # options whose value is a file or directory read
    writes: frozenset[str] = frozenset()  # options that change the host (or write a file)
    paths_are_positional: bool = False  # positional arguments are files the program reads
    pattern_first: bool = False  # grep: the first positional is the pattern (without -e/-f)
    aliases: dict[str, str] = field(default_factory=dict)  # short -> long, for reads/writes


@dataclass(slots=True)
class Parsed:
    """Options as (name, value or None), names normalised to their long form where known."""

    options: list[tuple[str, str | None]]
    positional: list[str]

    def names(self) -> set[str]:
        return {name for name, _ in self.options}


def _set(words: str) -> frozenset[str]:
    return frozenset(f"--{word}" for word in words.split())


SPECS: dict[str, Spec] = {
    "date": Spec(
        long=_set("date debug file help iso-8601 reference resolution rfc-3339 rfc-email set "
                  "universal utc version"),
        long_value=_set("date file reference rfc-3339 set"),
        short_value="dfrs",
        reads=_set("file reference"),
        writes=_set("set"),
        aliases={"-d": "--date", "-f": "--file", "-r": "--reference", "-s": "--set"},
    ),
    "dmesg": Spec(
        long=_set("buffer-size clear color console-level console-off console-on ctime decode "
                  "facility file follow follow-new force-prefix help human json kernel level "
                  "noescape nopager notime raw read-clear reltime show-delta since syslog "
                  "time-format until userspace version kmsg-file"),
        long_value=_set("buffer-size console-level facility file level since time-format until "
                        "kmsg-file"),
        short_value="FKflns",
        reads=_set("file kmsg-file"),
        writes=_set("clear read-clear console-off console-on console-level"),
        aliases={"-F": "--file", "-K": "--kmsg-file", "-c": "--read-clear", "-C": "--clear",
                 "-D": "--console-off", "-E": "--console-on", "-n": "--console-level",
                 "-f": "--facility", "-l": "--level", "-s": "--buffer-size"},
    ),
    "wc": Spec(
        long=_set("bytes chars files0-from help lines max-line-length version words"),
        long_value=_set("files0-from"),
        reads=_set("files0-from"),
        paths_are_positional=True,
    ),
    "du": Spec(
        long=_set("all apparent-size block-size bytes count-links dereference "
                  "dereference-args exclude exclude-from files0-from help human-readable inodes "
                  "max-depth no-dereference null one-file-system separate-dirs si summarize "
                  "threshold time time-style total version"),
        long_value=_set("block-size exclude exclude-from files0-from max-depth threshold "
                        "time-style"),
        short_value="BdtX",
        reads=_set("exclude-from files0-from"),
        paths_are_positional=True,
        aliases={"-X": "--exclude-from", "-B": "--block-size", "-d": "--max-depth",
                 "-t": "--threshold"},
    ),
    "df": Spec(
        long=_set("all block-size exclude-type help human-readable inodes local no-sync output "
                  "portability print-type si sync total type version"),
        long_value=_set("block-size exclude-type type"),
        short_value="Btx",
    ),
    "ss": Spec(
        long=_set("all bpf cgroup context contexts dccp diag events extended family filter help "
                  "inet-sockopt info ipv4 ipv6 kill listening memory mptcp net no-header numeric "
                  "oneline options packet processes query raw resolve sctp socket summary tcp "
                  "threads tipc tipcinfo tos udp unix version vsock xdp"),
        long_value=_set("diag family filter net query socket"),
        short_value="ADFNf",
        reads=_set("filter"),
        writes=_set("diag kill"),  # -D FILE dumps raw netlink messages into FILE
        aliases={"-D": "--diag", "-F": "--filter", "-K": "--kill", "-N": "--net",
                 "-A": "--query", "-f": "--family"},
    ),
    "journalctl": Spec(
        long=_set("after-cursor all boot case-sensitive catalog cursor cursor-file directory "
                  "disk-usage dmesg dump-catalog facility field fields file flush follow force "
                  "grep header help identifier image interval lines list-boots list-catalog "
                  "machine merge namespace no-full no-hostname no-pager no-tail output "
                  "output-fields pager-end priority quiet relinquish-var reverse root rotate "
                  "setup-keys show-cursor since smart-relinquish-var sync system unit until "
                  "update-catalog user user-unit utc vacuum-files vacuum-size vacuum-time verify "
                  "verify-key version"),
        long_value=_set("after-cursor cursor cursor-file directory facility field file grep "
                        "identifier image interval machine namespace output output-fields "
                        "priority root since unit until user-unit vacuum-files vacuum-size "
                        "vacuum-time verify-key"),
        short_value="cDFgMopStUu",
        reads=_set("directory file image root"),
        writes=_set("cursor-file flush relinquish-var rotate setup-keys smart-relinquish-var "
                    "sync update-catalog vacuum-files vacuum-size vacuum-time"),
        aliases={"-D": "--directory", "-i": "--file"},
    ),
    "ls": Spec(
        long=_set("all almost-all author block-size classify color context dereference "
                  "dereference-command-line dereference-command-line-symlink-to-dir directory "
                  "dired escape file-type format full-time group-directories-first help hide "
                  "hide-control-chars human-readable hyperlink ignore ignore-backups "
                  "indicator-style inode kibibytes literal no-group numeric-uid-gid quote-name "
                  "quoting-style recursive reverse show-control-chars si size sort tabsize time "
                  "time-style version width zero"),
        long_value=_set("block-size format hide ignore indicator-style quoting-style sort "
                        "tabsize time time-style width"),
        short_value="ITw",
        paths_are_positional=True,
    ),
    "cat": Spec(
        long=_set("help number number-nonblank show-all show-ends show-nonprinting show-tabs "
                  "squeeze-blank version"),
        paths_are_positional=True,
    ),
    "head": Spec(
        long=_set("bytes help lines quiet silent verbose version zero-terminated"),
        long_value=_set("bytes lines"),
        short_value="cn",
        paths_are_positional=True,
    ),
    "tail": Spec(
        long=_set("bytes follow help lines max-unchanged-stats pid quiet retry silent "
                  "sleep-interval verbose version zero-terminated"),
        long_value=_set("bytes lines max-unchanged-stats pid sleep-interval"),
        short_value="cns",
        paths_are_positional=True,
    ),
    "grep": Spec(
        long=_set("after-context basic-regexp before-context binary binary-files byte-offset "
                  "color colour context count dereference-recursive devices directories exclude "
                  "exclude-dir exclude-from extended-regexp file files-with-matches "
                  "files-without-match fixed-strings group-separator help ignore-case include "
                  "initial-tab invert-match label line-buffered line-number line-regexp "
                  "max-count no-filename no-group-separator no-ignore-case no-messages null "
                  "null-data only-matching perl-regexp quiet recursive regexp silent text "
                  "version with-filename word-regexp"),
        long_value=_set("after-context before-context binary-files context devices directories "
                        "exclude exclude-dir exclude-from file group-separator include label "
                        "max-count regexp"),
        short_value="ABCDdefm",
        reads=_set("exclude-from file"),
        paths_are_positional=True,
        pattern_first=True,
        aliases={"-f": "--file", "-e": "--regexp"},
    ),
}  # fmt: skip


def parse(spec: Spec, args: Sequence[str]) -> Parsed:
    """Parse ``args`` (argv without the program) as getopt_long would for ``spec``.

    Abbreviated long options resolve to the option they abbreviate; an ambiguous one counts as
    every option it could mean. Raises UnknownOption for a long option the table does not know.
    """
    options: list[tuple[str, str | None]] = []
    positional: list[str] = []
    index = 0
    while index < len(args):
        arg = args[index]
        index += 1
        if arg == "--":
            positional.extend(args[index:])
            break
        if arg.startswith("--"):
            name, has_value, value = arg.partition("=")
            matches = _resolve(spec, name)
            if not has_value and any(m in spec.long_value for m in matches) and index < len(args):
                value, has_value = args[index], "="
                index += 1
            options.extend((m, value if has_value else None) for m in matches)
        elif arg.startswith("-") and len(arg) > 1:
            for position, char in enumerate(arg[1:], start=1):
                short = f"-{char}"
                name = spec.aliases.get(short, short)
                if char in spec.short_value:
                    value = arg[position + 1 :]
                    if not value and index < len(args):
                        value = args[index]
                        index += 1
                    options.append((name, value))
                    break
                options.append((name, None))
        else:
            positional.append(arg)
    return Parsed(options, positional)


def _resolve(spec: Spec, name: str) -> list[str]:
    if name in spec.long:
        return [name]
    matches = sorted(option for option in spec.long if option.startswith(name))
    if not matches:
        raise UnknownOption(name)
    return matches
