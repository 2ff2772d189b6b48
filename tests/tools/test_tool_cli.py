"""kubectl-whereabouts's conventions, with no server: help with examples, a clear error and a non-zero exit on bad
input (never a traceback: run_tool asserts it), shell completion."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from tool import TOOL, run_tool

from support import netconf, run_cni

COMMANDS = ["pools", "who-has", "show", "release", "check", "export", "import", "completion"]


def test_help_lists_every_command_with_examples() -> None:
    done = run_tool("--help").ok()
    for command in COMMANDS:
        assert command in done.stdout
    assert "examples:" in done.stdout and "kubectl whereabouts who-has 10.1.2.3" in done.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_has_help_with_an_example(command: str) -> None:
    done = run_tool(command, "--help").ok()
    assert "example:" in done.stdout and "--kubeconfig" in done.stdout


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """A local store the plugin wrote: one address."""
    conf = netconf(tmp_path / "data", range="10.30.0.0/24")
    assert run_cni("ADD", conf, container_id="c1").returncode == 0
    return tmp_path / "data"


@pytest.mark.parametrize(
    ("args", "status", "says"),
    [
        (["frobnicate"], 2, "invalid choice: 'frobnicate'"),
        (["pools", "-o", "xml"], 2, "invalid choice: 'xml'"),
        (["who-has", "10.30.0.300"], 2, "invalid address '10.30.0.300'"),
        (["who-has", "10.30.0.99"], 1, "10.30.0.99 is held by nobody"),
        (["release"], 2, "release takes an ADDRESS or --pod NS/NAME"),
        (["release", "10.30.0.1", "--pod", "a/b"], 2, "release takes an ADDRESS or --pod NS/NAME"),
        (["release", "--pod", "nobody"], 2, "invalid --pod 'nobody': expected NAMESPACE/NAME"),
        (["show", "-A", "pod"], 2, "show POD names one pod"),
        (["show", "-n", "x", "-A"], 2, "-n/--namespace and -A/--all-namespaces exclude each other"),
        (["check", "--dry-run"], 2, "--dry-run goes with --repair"),
        (["import", "host-local"], 2, "import host-local needs host-local's network directory"),
        (["import", "/nonexistent.json"], 2, "cannot read /nonexistent.json"),
        (["import", "host-local", "/nonexistent"], 2, "needs the target network's whereabouts config"),
    ],
)
def test_bad_input_is_a_clear_error(store: Path, args: list[str], status: int, says: str) -> None:
    done = run_tool("--local-data-dir", str(store), *args)
    assert done.returncode == status and says in done.stderr, done.stderr
    assert done.stdout == ""


def test_a_missing_local_store_is_refused_and_not_made(tmp_path: Path) -> None:
    done = run_tool("--local-data-dir", str(tmp_path / "typo"), "pools")
    assert done.returncode == 2 and f"no local datastore in {tmp_path / 'typo'}" in done.stderr
    assert not (tmp_path / "typo").exists()


@pytest.mark.parametrize("urls", [",", " ", ", ,"], ids=["comma", "space", "commas"])
def test_etcd_naming_no_endpoint_is_a_usage_error(urls: str) -> None:
    done = run_tool("--etcd", urls, "pools")
    assert done.returncode == 2 and "names no endpoint" in done.stderr, done.stderr


def test_no_datastore_named_anywhere(tmp_path: Path) -> None:
    done = run_tool("--configuration-path", str(tmp_path / "none"), "pools")
    assert done.returncode == 2 and "no datastore: give --kubeconfig, --etcd URLS, --local-data-dir" in done.stderr


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("{not json", "is not JSON"),
        (json.dumps({"name": "n", "type": "bridge", "ipam": {"type": "host-local"}}), "has no whereabouts ipam"),
        (json.dumps({"name": "n", "ipam": {"type": "whereabouts"}}), "no range (set range or ipRanges)"),
    ],
)
def test_a_bad_network_config_names_the_problem(tmp_path: Path, content: str, says: str) -> None:
    (tmp_path / "net.conf").write_text(content)
    done = run_tool("--config", str(tmp_path / "net.conf"), "pools")
    assert done.returncode == 2 and says in done.stderr, done.stderr


def test_a_bad_kubeconfig_or_context_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "config").write_text("apiVersion: v1\ncontexts:\n- name: a\n  context: {cluster: c}\n")
    done = run_tool("--kubeconfig", str(tmp_path / "config"), "--context", "b", "pools")
    assert done.returncode == 2 and "no context 'b' (it has: a)" in done.stderr, done.stderr
    done = run_tool("--kubeconfig", str(tmp_path / "missing"), "pools")
    assert done.returncode == 2 and "cannot read kubeconfig" in done.stderr, done.stderr


def test_an_import_document_of_another_kind_is_refused(store: Path, tmp_path: Path) -> None:
    (tmp_path / "doc.json").write_text(json.dumps({"kind": "Something", "version": 1}))
    done = run_tool("--local-data-dir", str(store), "import", str(tmp_path / "doc.json"))
    assert done.returncode == 2 and "is not a WhereaboutsExport document of version 1" in done.stderr
    bad = {"kind": "WhereaboutsExport", "version": 1, "pools": [{"range": "10.30.0.0/24", "entries": [{"x": 1}]}]}
    (tmp_path / "doc.json").write_text(json.dumps(bad))
    done = run_tool("--local-data-dir", str(store), "import", str(tmp_path / "doc.json"))
    assert done.returncode == 2 and "pools[0] is not a pool of the export format (KeyError" in done.stderr


def test_flags_go_before_or_after_the_command(store: Path) -> None:
    before = run_tool("--local-data-dir", str(store), "-o", "json", "pools").ok()
    after = run_tool("pools", "--local-data-dir", str(store), "-o", "json").ok()
    assert before.stdout == after.stdout and json.loads(before.stdout)["items"][0]["held"] == 1


def test_bash_completion_completes_commands_flags_and_values() -> None:
    script = run_tool("completion", "bash").ok().stdout
    assert "complete -F _kubectl_whereabouts kubectl-whereabouts" in script
    assert run_tool("__complete", "wh").ok().stdout.split() == ["who-has"]
    assert run_tool("__complete", "check", "--re").ok().stdout.split() == ["--repair"]
    assert run_tool("__complete", "pools", "-o", "").ok().stdout.split() == ["json", "table", "wide", "yaml"]
    assert run_tool("__complete", "import", "").ok().stdout.split() == ["host-local"]


def test_bash_completion_runs_in_bash(tmp_path: Path) -> None:
    """The script itself, sourced into bash and asked as bash asks it on TAB."""
    script = run_tool("completion", "bash").ok().stdout
    program = f"""{script}
COMP_WORDS=(kubectl-whereabouts rel); COMP_CWORD=1; _kubectl_whereabouts; echo "${{COMPREPLY[@]}}"
"""
    env = {**os.environ, "PATH": f"{Path(TOOL).parent}:{os.environ['PATH']}"}
    done = subprocess.run(["bash", "-c", program], capture_output=True, text=True, env=env, timeout=60, check=True)
    assert done.stdout.split() == ["release"]


def test_kubectls_plugin_completion_answers_in_its_format() -> None:
    complete = Path(TOOL).with_name("kubectl_complete-whereabouts")
    done = subprocess.run([str(complete), "show", "--all"], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.split() == ["--all-namespaces", ":4"]
