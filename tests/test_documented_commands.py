"""Every ``snakemake`` command the README and the docs show dry-runs against the shipped config.

The commands are read from README.md, config/README.md and docs/**/*.md: each line of a
fenced shell block (continuations joined, comments dropped, cut at ``>``, ``|``, ``&&``,
``;``) and each inline code span whose program is ``snakemake`` (``.venv/bin/`` or not).
Each runs with ``-n`` added, in a fresh temporary working directory that links what the
workflow reads (Snakefile, rules, config, profiles, workflow scripts, the package, envs), so
a documented command that fails (a wrong option, a target no rule makes, a ``--config``
value the schema refuses) fails the suite. A command that cannot be dry-run here is in
:data:`SKIPPED` with its reason, and a listed skip the docs no longer show is an error.
The dry-runs go through Snakemake's own command-line entry point, a few at a time, forked
from one interpreter that imported Snakemake once (tests/dry_run_batch.py).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from asset_paths import SHARED_DATA

REPO = Path(__file__).resolve().parents[1]
DOCUMENTS = [REPO / "README.md", REPO / "config" / "README.md", *sorted((REPO / "docs").glob("**/*.md"))]
# What a command run from the repository root reads; linked into each clean working directory.
WORKFLOW_PATHS = ("Snakefile", "rules", "config", "profiles", "workflow_scripts", "rekalm", "envs")
# Code-block languages that hold no commands (any other block's lines are read as shell; a
# line is a command here only where its program is snakemake, so a diagram yields none).
NOT_SHELL = {"yaml", "yml", "python", "mermaid", "json", "toml", "text", "ini", "dot"}
SHELL_OPERATORS = {">", ">>", "2>", "2>&1", "|", "||", "&&", ";", "&"}
# Placeholders the docs write in paths, and what a dry-run fills in.
PLACEHOLDERS = {"<ds>": "ml1m_mini", "<dataset>": "ml1m_mini", "<name>": "popularity", "<ablation>": "graph"}
# Absolute paths the docs assume, and where a test machine has those files.
DOCUMENTED_PATHS = {"/data/rekalm": str(SHARED_DATA)}

#: command (as :attr:`Command.text` writes it) -> why it is not dry-run here.
SKIPPED: dict[str, str] = {
    "snakemake --report results/report.html": (
        "builds the report of a finished run (docs/stages.md: 'after a run'); tests/test_workflow.py builds it after "
        "its real run"
    ),
    "snakemake --report": "the same, in prose",
    (
        "snakemake --profile profiles/slurm --sdm conda --conda-prefix /shared/conda-envs --conda-create-envs-only"
    ): "needs conda on PATH and creates the environments (network); tests/test_envs.py checks the env files",
}


@dataclass(frozen=True)
class Command:
    """One documented ``snakemake`` command: where it is written and its arguments."""

    document: Path
    line: int
    arguments: tuple[str, ...]
    # files named by a ``# <name>`` first line of a YAML block the document shows before it
    files: tuple[tuple[str, str], ...] = ()

    @property
    def text(self) -> str:
        return shlex.join(["snakemake", *self.arguments])

    @property
    def where(self) -> str:
        return f"{self.document.relative_to(REPO)}:{self.line}"


def _shell_commands(text: str) -> list[list[str]]:
    """The simple commands of one shell line: comments dropped, cut at redirections and
    command separators (what follows a ``>`` is its file, not an argument)."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|<>")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    commands: list[list[str]] = [[]]
    redirect = False
    for token in lexer:
        if token in SHELL_OPERATORS or set(token) <= set(";&|<>"):
            redirect = token.startswith(">") or token.startswith("2>")
            commands.append([])
        elif redirect:
            redirect = False  # the file a redirection writes
        else:
            commands[-1].append(token)
    return [command for command in commands if command]


def _snakemake_arguments(command: list[str]) -> tuple[str, ...] | None:
    """The arguments of a ``snakemake`` command (after a ``$`` prompt and ``NAME=value``
    settings); None for another program."""
    words = list(command)
    while words and (words[0] == "$" or re.fullmatch(r"[A-Za-z_]\w*=\S*", words[0])):
        words.pop(0)
    if words and Path(words[0]).name == "snakemake":
        return tuple(words[1:])
    return None


_FENCE = re.compile(r"^(```|~~~)\s*([\w+-]*)\s*$")
_INLINE = re.compile(r"(?<!`)`([^`]+)`(?!`)")


def documented_commands(document: Path) -> list[Command]:
    """Every ``snakemake`` command of ``document``, in order."""
    lines = document.read_text(encoding="utf-8").splitlines()
    commands: list[Command] = []
    files: dict[str, str] = {}
    prose: list[tuple[int, str]] = []
    number = 0
    while number < len(lines):
        fence = _FENCE.match(lines[number].strip())
        if not fence:
            prose.append((number + 1, lines[number]))
            number += 1
            continue
        start, language = number, fence.group(2).lower()
        number += 1
        block: list[str] = []
        while number < len(lines) and not lines[number].strip().startswith(fence.group(1)):
            block.append(lines[number])
            number += 1
        number += 1
        if language in {"yaml", "yml"} and block and re.fullmatch(r"#\s*\S+\.ya?ml\s*", block[0].strip()):
            files[block[0].strip().lstrip("#").strip()] = "\n".join(block[1:]) + "\n"
        if language in NOT_SHELL:
            continue
        joined: list[tuple[int, str]] = []
        for offset, line in enumerate(block, start=start + 2):
            if joined and joined[-1][1].endswith("\\"):
                joined[-1] = (joined[-1][0], joined[-1][1][:-1] + " " + line)
            else:
                joined.append((offset, line))
        for line_number, line in joined:
            for command in _shell_commands(line):
                arguments = _snakemake_arguments(command)
                if arguments is not None:
                    commands.append(Command(document, line_number, arguments, _files_named(arguments, files)))
    # Inline spans may run over a line break; search the prose as one text, lines remembered.
    text = "\n".join(line for _, line in prose)
    starts = [0]
    for _, line in prose:
        starts.append(starts[-1] + len(line) + 1)
    for match in _INLINE.finditer(text):
        span = " ".join(match.group(1).split())
        try:
            arguments = _snakemake_arguments(shlex.split(span))
        except ValueError:  # an unbalanced quote: prose, not a command
            continue
        if arguments:  # a bare `snakemake` in prose names the tool
            index = next(i for i, start in enumerate(starts) if start > match.start()) - 1
            commands.append(Command(document, prose[index][0], arguments, _files_named(arguments, files)))
    return sorted(commands, key=lambda command: command.line)


def _files_named(arguments: tuple[str, ...], files: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple((name, files[name]) for name in arguments if name in files)


def all_commands() -> list[Command]:
    return [command for document in DOCUMENTS for command in documented_commands(document)]


def dry_run_arguments(command: Command) -> list[str]:
    """The command's arguments with ``-n`` and its placeholders filled in."""
    arguments = list(command.arguments)
    for index, argument in enumerate(arguments):
        for placeholder, value in PLACEHOLDERS.items():
            argument = argument.replace(placeholder, value)
        arguments[index] = argument
    unknown = [argument for argument in arguments if re.search(r"<[\w-]+>", argument)]
    assert not unknown, f"{command.where}: add the placeholder(s) in {unknown} to PLACEHOLDERS"
    return arguments if {"-n", "--dry-run", "--dryrun"} & set(arguments) else ["-n", *arguments]


def prepare_workdir(command: Command, workdir: Path) -> None:
    """A fresh working directory linking the workflow's files, plus the files the document
    writes for the command (its absolute data paths pointed at this machine's copies)."""
    workdir.mkdir(parents=True)
    for name in WORKFLOW_PATHS:
        (workdir / name).symlink_to(REPO / name)
    for name, text in command.files:
        for documented, here in DOCUMENTED_PATHS.items():
            text = text.replace(documented, here)
        (workdir / name).write_text(text, encoding="utf-8")


def dry_run_all(commands: list[Command], root: Path) -> list[tuple[int, str]]:
    """(exit code, output) of each command's dry-run, run in parallel by tests/dry_run_batch.py."""
    jobs = []
    for index, command in enumerate(commands):
        workdir = root / f"command{index}"
        prepare_workdir(command, workdir)
        jobs.append(
            {"workdir": str(workdir), "arguments": dry_run_arguments(command), "log": str(root / f"{index}.log")}
        )
    paths = [str(REPO), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    batch = subprocess.run(
        [sys.executable, str(REPO / "tests" / "dry_run_batch.py"), str(PARALLEL)],
        input=json.dumps(jobs),
        capture_output=True,
        text=True,
        env=environment,
        cwd=root,
        timeout=900,
    )
    assert batch.returncode == 0, f"tests/dry_run_batch.py failed:\n{batch.stderr[-3000:]}"
    codes = json.loads(batch.stdout)
    return [(code, Path(job["log"]).read_text(encoding="utf-8")) for code, job in zip(codes, jobs, strict=True)]


PARALLEL = max(2, min(4, os.cpu_count() or 1))
COMMANDS = all_commands()
# A command the workflow must refuse, run in the same batch: a harness that reported every
# dry-run as passed would fail this file instead of passing it.
CANARY = Command(REPO / "README.md", 0, ("--cores", "1", "--config", 'run={"seeds": ["twenty-two"]}'))


def _skip_reason(command: Command) -> str | None:
    if command.text in SKIPPED:
        return SKIPPED[command.text]
    if (
        any(documented in text for _, text in command.files for documented in DOCUMENTED_PATHS)
        and not SHARED_DATA.is_dir()
    ):
        return f"the original study's data is not at {SHARED_DATA} (set REKALM_ORIGINAL_DATA)"
    return None


Key = tuple[tuple[str, ...], tuple[tuple[str, str], ...]]


def _key(command: Command) -> Key:
    return command.arguments, command.files


@pytest.fixture(scope="module")
def dry_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[Key, tuple[int, str]]:
    """(exit code, output) of each distinct documented command that is not skipped, and of
    the canary, each dry-run once."""
    distinct = {_key(command): command for command in [*COMMANDS, CANARY] if _skip_reason(command) is None}
    results = dry_run_all(list(distinct.values()), tmp_path_factory.mktemp("documented_commands"))
    return dict(zip(distinct, results, strict=True))


@pytest.mark.slow
@pytest.mark.parametrize("command", COMMANDS, ids=lambda command: command.where)
def test_a_documented_command_dry_runs(command: Command, dry_runs: dict[Key, tuple[int, str]]) -> None:
    reason = _skip_reason(command)
    if reason:
        pytest.skip(f"{command.text}: {reason}")
    code, output = dry_runs[_key(command)]
    assert code == 0, f"{command.where}: `{command.text}` fails as a dry-run:\n{output[-2500:]}"


@pytest.mark.slow
def test_the_harness_sees_a_failing_command(dry_runs: dict[Key, tuple[int, str]]) -> None:
    code, output = dry_runs[_key(CANARY)]
    assert code != 0 and "run.seeds.0: 'twenty-two' is not of type 'integer'" in output


def test_every_listed_skip_is_still_documented() -> None:
    documented = {command.text for command in COMMANDS}
    gone = [text for text in SKIPPED if text not in documented]
    assert not gone, f"SKIPPED lists commands no document shows any more (remove them): {gone}"


def test_the_docs_show_the_commands_this_check_is_for() -> None:
    texts = {command.text for command in COMMANDS}
    replicates = (
        'snakemake --cores 2 --config \'run={"datasets": ["ml1m_mini"], "ablations": ["no_kn", "graph"], '
        '"seeds": [22, 23, 24]}\''
    )
    assert replicates in texts
    assert any(command.files for command in COMMANDS)  # local.yaml, written from its YAML block
    assert len(COMMANDS) >= 20


def test_commands_are_read_the_way_a_shell_and_a_reader_would(tmp_path: Path) -> None:
    document = tmp_path / "guide.md"
    document.write_text(
        "Run `snakemake` (the tool), or `.venv/bin/snakemake --cores 2\n  results/<ds>/split/split.parquet` inline.\n"
        "```bash\n"
        "make lint                      # snakemake --lint + snakefmt --check\n"
        ".venv/bin/snakemake --cores 2 \\\n"
        "    --config 'run={\"seeds\": [22, 23]}'   # two seeds\n"
        ".venv/bin/snakemake --dag > dag.dot && dot -Tsvg dag.dot > dag.svg\n"
        "snakemake -n --quiet rules | head\n"
        "$ NUMBA_CACHE_DIR=/tmp/numba snakemake --lint\n"
        "```\n"
        "```yaml\n# extra.yaml\nrun: {seeds: [22]}\n```\n"
        "```\nsnakemake --configfile config/config.yaml extra.yaml\n```\n"
        "```yaml\nrun: {datasets: [x]}   # no file name: not written\n```\n",
        encoding="utf-8",
    )
    commands = documented_commands(document)
    assert [(command.line, command.arguments) for command in commands] == [
        (1, ("--cores", "2", "results/<ds>/split/split.parquet")),
        (5, ("--cores", "2", "--config", 'run={"seeds": [22, 23]}')),
        (7, ("--dag",)),
        (8, ("-n", "--quiet", "rules")),
        (9, ("--lint",)),
        (16, ("--configfile", "config/config.yaml", "extra.yaml")),
    ]
    assert commands[-1].files == (("extra.yaml", "run: {seeds: [22]}\n"),)
    assert dry_run_arguments(commands[0]) == ["-n", "--cores", "2", "results/ml1m_mini/split/split.parquet"]
    assert dry_run_arguments(commands[3]) == ["-n", "--quiet", "rules"]
