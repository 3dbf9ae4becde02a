"""docs/CLI.md: every command's ``--help``, rendered the same way on every machine.

The help text is rendered in-process from the typer app (``typer.main.get_command``) through
click's plain formatter at a fixed width (no terminal size, no colour, no rich markup), one
heading per command. Between each command's ``<!-- notes: NAME -->`` and ``<!-- end notes -->``
markers the file may hold hand-written notes; they are kept when the file is rewritten.
tests/test_cli_reference.py fails when the committed file differs from a fresh rendering.

    python -m segtool.cli.reference --write docs/CLI.md   # rewrite (scripts/cli_reference.sh)
    python -m segtool.cli.reference --check docs/CLI.md   # exit 1 if stale
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import typer

WIDTH = 78  # what click prints on any terminal of 80 columns or more
REGENERATE = "python -m segtool.cli.reference --write docs/CLI.md"  # or: bash scripts/cli_reference.sh
NOTES = re.compile(r"<!-- notes: (?P<name>[\w-]+) -->\n(?P<text>.*?)<!-- end notes -->\n", re.S)

HEADER = f"""\
# segtool command-line reference

<!-- Generated from the commands' --help by `{REGENERATE}`
     (or `bash scripts/cli_reference.sh`); tests/test_cli_reference.py fails when it is stale.
     Edit only between a "notes" marker and its "end notes": everything else is rewritten. -->

Every command's `--help`, as `segtool COMMAND -h` prints it on a terminal of 80 columns or more,
followed by notes on what the help does not say. The [README](../README.md) has one example per
command, the exit codes and the limitations.

"""


def root_command() -> Any:
    """The click command behind `segtool` (typer's own click; imported here because the app
    imports every command module)."""
    from segtool.cli.main import app

    return typer.main.get_command(app)


def _plain(command: Any) -> None:
    """Force click's plain formatter (typer renders with rich when a command asks for markup)."""
    if hasattr(command, "rich_markup_mode"):
        command.rich_markup_mode = None
    for sub in getattr(command, "commands", {}).values():
        _plain(sub)


def _help(command: Any, name: str, parent: Any = None) -> tuple[Any, str]:
    """(context, help text) at WIDTH columns, with the command's own context settings (-h)."""
    settings = {**command.context_settings, "terminal_width": WIDTH, "max_content_width": WIDTH, "color": False}
    context = command.context_class(command, info_name=name, parent=parent, **settings)
    return context, command.get_help(context)


def help_pages(root: Any = None) -> list[tuple[str, str]]:
    """(command path, help text) for `segtool` and each subcommand, in the app's order."""
    root = root or root_command()
    _plain(root)
    parent, text = _help(root, "segtool")
    pages = [("segtool", text)]
    for name in root.list_commands(parent) if hasattr(root, "list_commands") else []:
        command = root.get_command(parent, name)
        if command is not None and not command.hidden:
            pages.append((f"segtool {name}", _help(command, name, parent)[1]))
    return pages


def read_notes(text: str) -> dict[str, str]:
    """The hand-written notes of a rendered file, by command name (``segtool`` for the root)."""
    return {m["name"]: m["text"] for m in NOTES.finditer(text)}


def _anchor(path: str) -> str:
    return path.replace(" ", "-")


def render_reference(notes: Mapping[str, str] | None = None, root: Any = None) -> str:
    """docs/CLI.md's text: the header, a contents list, then per command its heading, its
    ``--help`` in a text block and its notes block (``notes`` by name; empty if not given)."""
    notes = notes or {}
    pages = help_pages(root)
    parts = [HEADER]
    parts += [f"- [`{path}`](#{_anchor(path)})\n" for path, _ in pages]
    for path, text in pages:
        name = path.split()[-1]
        note = notes.get(name, "")
        parts.append(f"\n## `{path}`\n\n```text\n{text.rstrip()}\n```\n\n")
        parts.append(f"<!-- notes: {name} -->\n{note}<!-- end notes -->\n")
    return "".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser("python -m segtool.cli.reference", description="Render docs/CLI.md from --help.")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--write", type=Path, metavar="PATH", help="rewrite PATH, keeping its notes")
    action.add_argument("--check", type=Path, metavar="PATH", help="exit 1 if PATH is not what --write makes")
    args = parser.parse_args(argv)
    target = args.write or args.check
    if target is None:
        sys.stdout.write(render_reference())
        return 0
    current = target.read_text(encoding="utf-8") if target.is_file() else ""
    fresh = render_reference(read_notes(current))
    if args.check:
        if fresh != current:
            print(f"{target} is stale: run `{REGENERATE}`", file=sys.stderr)
            return 1
        return 0
    lost = sorted(set(read_notes(current)) - set(read_notes(fresh)))
    if lost:  # notes of a command that no longer exists: keep the file, say which
        print(f"notes for {', '.join(lost)} have no command any more: move them first", file=sys.stderr)
        return 1
    target.write_text(fresh, encoding="utf-8")
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
