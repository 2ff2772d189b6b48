"""Shell completion from the command parser itself: `kubectl-whereabouts completion bash` prints a bash script
that asks `kubectl-whereabouts __complete WORDS...` for the candidates; `kubectl_complete-whereabouts` answers
kubectl's own plugin completion (kubectl 1.26+: `kubectl whereabouts <TAB>`) the same way, in its format."""

from __future__ import annotations

import argparse
import sys

VALUES = {"-o": ["table", "wide", "json", "yaml"], "--output": ["table", "wide", "json", "yaml"]}
SCRIPT = """# bash completion for kubectl-whereabouts: source <(kubectl-whereabouts completion bash)
_kubectl_whereabouts() {
    local IFS=$'\\n'
    COMPREPLY=($(kubectl-whereabouts __complete "${COMP_WORDS[@]:1:COMP_CWORD}" 2>/dev/null))
    [ ${#COMPREPLY[@]} -eq 0 ] && compopt -o default 2>/dev/null
    return 0
}
complete -F _kubectl_whereabouts kubectl-whereabouts
"""


def bash_script() -> str:
    return SCRIPT


def candidates(parser: argparse.ArgumentParser, words: list[str]) -> list[str]:
    """The completions of the last word, after the ones before it."""
    *before, current = words or [""]
    commands = _commands(parser)
    command = next((w for w in before if w in commands), None)
    if before and before[-1] in VALUES:
        options = VALUES[before[-1]]
    elif command is None:
        options = [*commands, *_flags(parser)] if current.startswith("-") or not current else list(commands)
    elif command == "completion":
        options = ["bash"]
    elif command == "import" and before[-1] == "import":
        options = ["host-local"]
    else:
        options = _flags(commands[command])
    return sorted(o for o in options if o.startswith(current) and (current.startswith("-") or not o.startswith("-")))


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _flags(parser: argparse.ArgumentParser) -> list[str]:
    return [flag for action in parser._actions for flag in action.option_strings if flag.startswith("--")]


def complete(argv: list[str] | None = None) -> int:
    """kubectl_complete-whereabouts: the candidates, then Cobra's directive line (4: no file completion)."""
    from whereabouts.tools.cli import parser

    found = candidates(parser(), list(sys.argv[1:] if argv is None else argv))
    print("\n".join([*found, ":4"]))
    return 0
