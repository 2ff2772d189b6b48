"""The launcher of every whereabouts command, written from one text: the `whereabouts` file beside this
module (pip installs it as the CNI executable).

    python3 -m whereabouts.node.launcher DIR [--python PATH]

writes the commands into DIR (the image build runs this for /usr/local/bin); install-cni writes the plugin
launcher onto the nodes with `script`.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

TEMPLATE = Path(__file__).with_name("whereabouts")
PLUGIN_MODULE = "whereabouts.cni.main"
COMMANDS = {
    "whereabouts": PLUGIN_MODULE,
    "whereabouts-node": "whereabouts.node.daemon",
    "whereabouts-install-cni": "whereabouts.node.install",
    "whereabouts-controller": "whereabouts.controller.cli",
}


def script(command: str, *, python: str, note: str = "", environ: dict[str, str] | None = None) -> str:
    """The launcher of `command` run by interpreter `python` (its arguments included), with `note` as a
    comment line under the interpreter's, setting each of `environ` unless the caller's environment has it."""
    first, *rest = TEMPLATE.read_text().splitlines(keepends=True)
    if first.strip() != "#!python":
        raise ValueError(f"{TEMPLATE}: expected '#!python' as its first line")
    body = "".join(rest).replace(f"from {PLUGIN_MODULE} import main", f"from {COMMANDS[command]} import main")
    if environ:
        settings = "".join(f"os.environ.setdefault({k!r}, {v!r})\n" for k, v in sorted(environ.items()))
        body = body.replace("import sys\n", f"import os\nimport sys\n\n{settings}", 1)
    return f"#!{python}\n" + (f"# {note}\n" if note else "") + body


def write_commands(directory: Path, *, python: str) -> list[Path]:
    written = []
    for command in COMMANDS:
        path = directory / command
        staging = path.with_name(f".{command}.tmp")
        staging.write_text(script(command, python=python))
        os.chmod(staging, 0o755)
        os.rename(staging, path)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m whereabouts.node.launcher", description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--python", default="/usr/bin/python3")
    args = parser.parse_args(argv)
    for path in write_commands(args.directory, python=args.python):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
