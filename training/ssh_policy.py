"""What traindeck lets reach `ssh`: host names and a strict allow-list of ssh options.

A profile.toml or run.json may come from someone else (a run directory handed to you, a runs
directory others can write): its `[launch] hosts` and `ssh_options` are data, never commands.
`ssh -oProxyCommand=...` or `-oLocalCommand=...` runs whatever it says, as you, before any
host is reached, and a "host" that starts with '-' is an option. So both are checked when a
profile is loaded (training.profile, with the file and line) and again right before every ssh
(training.supervise.node_ssh.node_ssh), whatever file they came from:

    host_problem(host)                 None, or why it is not a host name
    ssh_options_problem(options)       None, or which option is refused and what is allowed
    check_ssh_target(host, options)    raises TraindeckError (both, plus the -F file's owner)

Allowed options: -F FILE, -i FILE, -p PORT, -l USER, -o KEY=VALUE for the keys in SAFE_KEYS
(the word after -o may be joined: -oPort=22, -p2222), and the flags -4 -6 -q -v -C -T. A -F
file is a config file ssh obeys (it can name a ProxyCommand too): before ssh runs it must be a
regular file of yours (or root's) that nobody else can write.
"""

from __future__ import annotations

import os
import re
import stat
from typing import Iterable

from training.errors import TraindeckError

# A host name, an address ([v6] too) or user@host; never starting with '-' (an ssh option).
HOST = re.compile(r"[A-Za-z0-9_.@\[\]:%][A-Za-z0-9_.@\[\]:%-]*")
USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
NUMBER = re.compile(r"[0-9]{1,6}")
YES_NO = {"yes", "no"}

# -o keys that change how ssh connects and authenticates, none of which runs a command, opens a
# forward or talks through another program (lower case: ssh's keys are case-insensitive).
SAFE_KEYS: dict[str, str] = {
    "port": "number", "user": "user", "identityfile": "path", "identitiesonly": "yes/no",
    "stricthostkeychecking": "yes/no/accept-new/ask/off", "userknownhostsfile": "path",
    "globalknownhostsfile": "path", "connecttimeout": "number", "connectionattempts": "number",
    "serveraliveinterval": "number", "serveralivecountmax": "number", "batchmode": "yes/no",
    "loglevel": "word", "compression": "yes/no", "addressfamily": "word", "checkhostip": "yes/no",
    "hostkeyalias": "user", "tcpkeepalive": "yes/no", "pubkeyauthentication": "yes/no",
    "passwordauthentication": "yes/no", "preferredauthentications": "word", "hashknownhosts": "yes/no",
}
FLAGS_WITH_VALUE = {"-F": "path", "-i": "path", "-p": "number", "-l": "user"}
FLAGS_ALONE = {"-4", "-6", "-q", "-v", "-C", "-T"}
ALLOWED = ("-F FILE, -i FILE, -p PORT, -l USER, -4, -6, -q, -v, -C, -T and -o KEY=VALUE for "
           + ", ".join(sorted({"Port", "User", "IdentityFile", "IdentitiesOnly", "StrictHostKeyChecking",
                               "UserKnownHostsFile", "GlobalKnownHostsFile", "ConnectTimeout", "ConnectionAttempts",
                               "ServerAliveInterval", "ServerAliveCountMax", "BatchMode", "LogLevel", "Compression",
                               "AddressFamily", "CheckHostIP", "HostKeyAlias", "TCPKeepAlive",
                               "PubkeyAuthentication", "PasswordAuthentication", "PreferredAuthentications",
                               "HashKnownHosts"}, key=str.lower)))


def host_problem(host: object) -> str | None:
    if not isinstance(host, str) or not HOST.fullmatch(host):
        return (f"{host!r} is not a host name or address (letters, digits, '.', '-', '_', user@ before it, "
                f"never a leading '-')")
    return None


def _value_problem(kind: str, value: str, what: str) -> str | None:
    if not value:
        return f"{what} has no value"
    if value.startswith("-"):
        return f"{what} has the value {value!r}, which starts with '-' (an option, not a value)"
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        return f"{what} has a control character in its value"
    if kind == "number" and not NUMBER.fullmatch(value):
        return f"{what} must be a number, not {value!r}"
    if kind == "user" and not USER.fullmatch(value):
        return f"{what} must be a user or host name, not {value!r}"
    if kind == "yes/no" and value.lower() not in YES_NO:
        return f"{what} must be yes or no, not {value!r}"
    if kind == "word" and not re.fullmatch(r"[A-Za-z0-9_,.-]+", value):
        return f"{what} must be one word, not {value!r}"
    if kind.startswith("yes/no/") and value.lower() not in kind.split("/"):
        return f"{what} must be one of {kind.replace('/', ', ')}, not {value!r}"
    return None


def _o_problem(option: str) -> str | None:
    key, sep, value = option.partition("=")
    if not sep:
        key, _, value = option.strip().partition(" ")
    key, value = key.strip(), value.strip()
    kind = SAFE_KEYS.get(key.lower())
    if kind is None:
        return (f"'-o {option}' is not allowed: ssh's {key or 'empty'} option is not on traindeck's list "
                f"(options that run commands or reach through other hosts, such as ProxyCommand, LocalCommand, "
                f"PermitLocalCommand, ProxyJump or Match exec, never are)")
    return _value_problem(kind, value, f"'-o {key}'")


def ssh_options_problem(options: object) -> str | None:
    """None when every word is allowed, else one sentence: which word, and why."""
    if not isinstance(options, (list, tuple)):
        return "ssh_options must be a list of strings, e.g. [\"-F\", \"~/.ssh/cluster\"]"
    words = list(options)
    i = 0
    while i < len(words):
        word = words[i]
        if not isinstance(word, str):
            return f"ssh_options has {word!r}, which is not a string"
        if word in FLAGS_ALONE:
            i += 1
            continue
        flag, joined = word[:2], word[2:]
        if flag == "-o":
            if not joined:
                if i + 1 >= len(words) or not isinstance(words[i + 1], str):
                    return "'-o' at the end of ssh_options has no KEY=VALUE after it"
                joined, i = words[i + 1], i + 1
            problem = _o_problem(joined)
            if problem:
                return problem
        elif flag in FLAGS_WITH_VALUE:
            if not joined:
                if i + 1 >= len(words) or not isinstance(words[i + 1], str):
                    return f"'{flag}' at the end of ssh_options has no value after it"
                joined, i = words[i + 1], i + 1
            problem = _value_problem(FLAGS_WITH_VALUE[flag], joined, f"'{flag}'")
            if problem:
                return problem
        else:
            return f"ssh_options has {word!r}, which is not an option traindeck passes to ssh"
        i += 1
    return None


def config_files(options: Iterable[str]) -> list[str]:
    """The -F files among (checked) options, ~ expanded."""
    words, out = list(options), []
    for i, word in enumerate(words):
        if word == "-F" and i + 1 < len(words):
            out.append(os.path.expanduser(words[i + 1]))
        elif word.startswith("-F") and len(word) > 2:
            out.append(os.path.expanduser(word[2:]))
    return out


def config_file_problem(path: str) -> str | None:
    """An ssh config file is code for ssh (ProxyCommand, Match exec): only one nobody else can change."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:  # nothing there to obey: ssh itself says it cannot open it
        return None
    except OSError as exc:
        return f"the ssh config file {path} (-F) cannot be read: {exc.strerror or exc}"
    if not stat.S_ISREG(st.st_mode):
        return f"the ssh config file {path} (-F) is not a regular file (a symlink or something else)"
    if st.st_uid not in (os.geteuid(), 0):
        return f"the ssh config file {path} (-F) belongs to uid {st.st_uid}, not to you or root"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"the ssh config file {path} (-F) can be changed by others (mode {stat.S_IMODE(st.st_mode):o})"
    return None


def check_ssh_target(host: object, options: object, source: str = "the profile") -> None:
    """Right before an ssh: the host and the options once more, whatever file they came from."""
    problem = host_problem(host)
    if problem is None:
        problem = ssh_options_problem(options)
    if problem is None:
        for path in config_files(options):  # type: ignore[arg-type]
            problem = config_file_problem(path)
            if problem:
                break
    if problem:
        raise TraindeckError(f"refusing to run ssh for {source}: {problem}. Hosts and [launch] ssh_options are "
                             f"checked before every ssh because a profile or run directory may come from someone "
                             f"else; allowed options are {ALLOWED}. Fix the profile's [launch] section (or "
                             f"~/.ssh/config for anything else).")
