"""docs/CLI.md is every command's --help: rendered afresh here, it must equal the committed file.

Regenerate with `python -m segtool.cli.reference --write docs/CLI.md` (or
`bash scripts/cli_reference.sh`); the hand-written notes between the markers are kept.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path

from segtool.cli import reference
from segtool.cli.main import COMMANDS

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "CLI.md"
# Flags of other tools that the notes name (docker in the triton notes).
FOREIGN_FLAGS = {"--gpus", "--rm", "--model-repository"}


def committed() -> str:
    return DOC.read_text(encoding="utf-8")


def stale_message(fresh: str, current: str) -> str:
    diff = difflib.unified_diff(current.splitlines(), fresh.splitlines(), "docs/CLI.md", "--help now", lineterm="")
    return (
        f"docs/CLI.md is stale (a command, flag or help text changed): run `{reference.REGENERATE}` "
        "(or bash scripts/cli_reference.sh) and commit the file.\n" + "\n".join(list(diff)[:80])
    )


def test_cli_reference_is_current(monkeypatch):
    monkeypatch.setenv("COLUMNS", "40")  # the rendering never depends on the terminal
    current = committed()
    fresh = reference.render_reference(reference.read_notes(current))
    assert fresh == current, stale_message(fresh, current)


def test_every_command_has_a_section_with_its_usage():
    text = committed()
    for name in ["segtool", *COMMANDS]:
        path = "segtool" if name == "segtool" else f"segtool {name}"
        assert f"\n## `{path}`\n" in text, path
        assert f"<!-- notes: {name} -->" in text, name
    for name in COMMANDS:
        assert f"Usage: segtool {name} [OPTIONS]" in text, name


def test_a_changed_help_text_or_a_new_flag_makes_the_check_fail():
    """The check can fail: the rendering with one option's help changed, or one flag more, differs."""
    current = committed()
    notes = reference.read_notes(current)
    root = reference.root_command()
    tile = next(p for p in root.commands["run"].params if p.name == "tile")
    tile.help = "A help text that docs/CLI.md does not have."
    changed = reference.render_reference(notes, root)
    assert changed != current and "docs/CLI.md does not have" in changed
    assert "docs/CLI.md is stale" in stale_message(changed, current)

    root = reference.root_command()
    runs = next(p for p in root.commands["bench"].params if p.name == "runs")
    runs.opts.append("--brand-new-flag")  # a flag more (here an alias), nothing else changed
    renamed = reference.render_reference(notes, root)
    assert renamed != current and "--brand-new-flag" in renamed


def test_write_restores_the_help_and_keeps_the_notes(tmp_path, capsys):
    current = committed()
    target = tmp_path / "CLI.md"
    target.write_text(current.replace("Infer in overlapping NxN windows", "Old help"), encoding="utf-8")
    assert reference.main(["--check", str(target)]) == 1
    assert reference.main(["--write", str(target)]) == 0
    assert target.read_text(encoding="utf-8") == current
    assert reference.main(["--check", str(target)]) == 0


def test_write_refuses_to_drop_notes_of_a_command_that_is_gone(tmp_path, capsys):
    target = tmp_path / "CLI.md"
    target.write_text(committed() + "<!-- notes: retired -->\nkeep me\n<!-- end notes -->\n", encoding="utf-8")
    assert reference.main(["--write", str(target)]) == 1
    assert "retired" in capsys.readouterr().err
    assert "keep me" in target.read_text(encoding="utf-8")


def test_notes_name_only_flags_that_exist():
    root = reference.root_command()
    flags = {"-h", "--help", "--version"}
    for command in root.commands.values():
        for param in command.params:
            flags.update(param.opts + param.secondary_opts)
    named = set()
    for text in reference.read_notes(committed()).values():
        named |= set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", text))
    assert not named - flags - FOREIGN_FLAGS, f"docs/CLI.md notes name flags no command has: {named - flags}"
