"""The operator's kit in workers/ refers only to real ``adrizzle-worker`` flags and files.

Nothing is built or started: the systemd unit, the example environment file, the Containerfile
and the commands in workers/README.md are parsed, and every command line they hold is parsed
again by the worker's own argparse parser, so a renamed or removed flag fails here.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from adrizzle.worker.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
KIT = ROOT / "workers"


def worker_flags() -> set[str]:
    parser = build_parser()
    return {s for action in parser._actions for s in action.option_strings}


def flags_in(argv: list[str]) -> list[str]:
    return [a for a in argv if a.startswith("--")]


def unit_sections(text: str) -> dict[str, dict[str, list[str]]]:
    """A systemd unit: comments dropped, continuation lines joined, keys may repeat."""
    text = re.sub(r"\\\n\s*", " ", text)
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def env_file() -> dict[str, str]:
    values = {}
    for line in (KIT / "adrizzle-worker.env").read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key] = value
    return values


def env_examples() -> list[str]:
    """Every value given to ADRIZZLE_EXTRA_ARGS, commented-out examples included."""
    return [
        line.lstrip("#").partition("=")[2]
        for line in (KIT / "adrizzle-worker.env").read_text().splitlines()
        if line.lstrip("#").startswith("ADRIZZLE_EXTRA_ARGS=")
    ]


def expand(command: str, env: dict[str, str]) -> list[str]:
    """systemd's expansion: ${VAR} is one argument, $VAR splits on spaces, %H the host."""
    argv: list[str] = []
    for word in shlex.split(command.replace("%H", "worker-host")):
        if m := re.fullmatch(r"\$\{(\w+)\}", word):
            argv.append(env[m.group(1)])
        elif m := re.fullmatch(r"\$(\w+)", word):
            argv += env[m.group(1)].split()
        else:
            argv.append(word)
    return argv


def test_unit_runs_the_worker_with_real_flags() -> None:
    unit = unit_sections((KIT / "adrizzle-worker.service").read_text())
    service = unit["Service"]
    [exec_start] = service["ExecStart"]
    assert exec_start.split()[0].endswith("/adrizzle-worker")
    assert service["EnvironmentFile"] == ["/etc/adrizzle/worker.env"]
    assert service["User"] != ["root"]
    env = env_file()
    used = set(re.findall(r"\$\{?(\w+)\}?", exec_start))
    assert used <= set(env), f"variables not in the example env file: {used - set(env)}"
    argv = expand(exec_start, env)[1:]
    assert set(flags_in(argv)) <= worker_flags()
    args = build_parser().parse_args(argv)  # the whole command line, values included
    assert args.token_file == "/etc/adrizzle/token"
    assert args.driver == env["ADRIZZLE_DRIVER"]
    # Configuration errors (exit 2) are not retried forever.
    assert service["RestartPreventExitStatus"] == ["2"]


@pytest.mark.parametrize("extra", env_examples())
def test_every_extra_args_example_parses(extra: str) -> None:
    env = {**env_file(), "ADRIZZLE_EXTRA_ARGS": extra}
    [exec_start] = unit_sections((KIT / "adrizzle-worker.service").read_text())["Service"][
        "ExecStart"
    ]
    argv = expand(exec_start, env)[1:]
    assert set(flags_in(argv)) <= worker_flags()
    build_parser().parse_args(argv)


def test_env_file_holds_no_token() -> None:
    assert "ADRIZZLE_AUTH_TOKEN" not in env_file()


def containerfile() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n\s*", " ", (KIT / "Containerfile").read_text())
    out = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            instruction, _, rest = line.strip().partition(" ")
            out.append((instruction.upper(), rest.strip()))
    return out


def test_container_runs_the_worker_as_non_root_with_real_flags() -> None:
    instructions = containerfile()
    [entrypoint] = [json.loads(rest) for ins, rest in instructions if ins == "ENTRYPOINT"]
    [cmd] = [json.loads(rest) for ins, rest in instructions if ins == "CMD"]
    assert entrypoint == ["adrizzle-worker"]
    assert set(flags_in(cmd)) <= worker_flags()
    args = build_parser().parse_args(cmd)
    assert args.token_file
    [user] = [rest for ins, rest in instructions if ins == "USER"]
    assert user.split(":")[0] not in ("0", "root")
    for ins, rest in instructions:
        if ins == "COPY":
            *sources, _dest = rest.split()
            for source in sources:
                assert (ROOT / source).exists(), f"COPY {source}: no such file"


def documented_commands() -> list[list[str]]:
    """``adrizzle-worker tcp://...`` command lines in the README and the Containerfile's
    comments, continuation lines joined."""
    commands = []
    for path in (KIT / "README.md", KIT / "Containerfile"):
        text = re.sub(r"\\\n[#\s]*", " ", path.read_text())
        for line in text.splitlines():
            if "tcp://" in line and "adrizzle-worker" in line:
                words = shlex.split(line.lstrip("# "))
                commands.append(words[words.index(next(w for w in words if "tcp://" in w)) :])
    return commands


def test_documented_commands_use_real_flags() -> None:
    commands = documented_commands()
    assert len(commands) >= 3
    for argv in commands:
        assert set(flags_in(argv)) <= worker_flags(), argv
        build_parser().parse_args(argv)


def test_readme_states_the_trust_boundary() -> None:
    text = (KIT / "README.md").read_text()
    assert "Anyone who holds the cluster token can run any code on every worker" in text
    for topic in ("## Install", "## The token", "## Network and firewall", "## TLS", "chmod 600"):
        assert topic in text
