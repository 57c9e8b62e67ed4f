"""``--help`` of every command shows every word of its texts and readable value names
(issue #13, item 22: rich markup swallowed ``[classify]`` and ``[segment: 8, ...]``)."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from smearscan.cli import app

runner = CliRunner()
COMMANDS = ["process", "train", "evaluate", "status", "synth", "models"]


def _help(*command: str) -> str:
    result = runner.invoke(app, [*command, "--help"], terminal_width=100)
    assert result.exit_code == 0, result.output
    return result.output


def _squeezed(text: str) -> str:
    """``text`` without any whitespace: wrapping and indentation do not matter."""
    return "".join(text.split())


@pytest.mark.parametrize("name", COMMANDS)
def test_every_word_of_every_option_text_is_shown(name: str):
    sub = typer.main.get_command(app).commands[name]  # type: ignore[attr-defined]
    shown = _squeezed(_help(name))
    for param in sub.params:
        text = getattr(param, "help", None)
        if text:
            assert _squeezed(text) in shown, (name, param.name, text)
    if sub.help:
        first = sub.help.split("\n\n")[0]
        assert _squeezed(first) in shown, (name, first)


def test_bracketed_words_survive():
    process = _help("process")
    assert "[classify] section" in " ".join(process.split())
    train = " ".join(_help("train").split())
    for words in (
        "[segment: 8, classify: 16]",
        "[segment: 60, classify: 40]",
        "[segment: 16, classify: 32]",
        "[segment: 0.2, classify: 0.15]",
        "[-1, 1]",
    ):
        assert words in train, words


@pytest.mark.parametrize("name", COMMANDS)
def test_value_names_are_readable(name: str):
    text = _help(name)
    assert "<list[" not in text and "list[Path]" not in text and "{inputs}" not in text, text


def test_process_names_its_values():
    text = " ".join(_help("process").split())
    assert "process [OPTIONS] INPUT..." in text
    for shown in ("--out OUT.xlsx", "--glob PATTERN", "--model NAME|PATH.pt", "--since WHEN"):
        assert shown in text, shown
    assert "--data PATH[@UM]" in " ".join(_help("train").split())
