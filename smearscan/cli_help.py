"""How ``--help`` shows the commands: every word of the option texts, readable names.

The ``smearscan`` app is built with ``rich_markup_mode=None`` (plain click help):
under rich markup a text such as ``thresholds in the [classify] section`` or
``[segment: 8, classify: 16]`` loses its bracketed words, which rich reads as
style tags. Options name their values with a metavar (``--out PATH``,
``--glob PATTERN``); :class:`ReadableCommand` does the same for arguments,
which typer would otherwise show with a type label such as ``<list[Path]>``.
"""

from __future__ import annotations

from typing import Any

from typer.core import TyperArgument, TyperCommand


class _MetavarArgument(TyperArgument):
    """An argument shown by its metavar alone: ``INPUT...`` in the usage and the list."""

    def display_type_rich(self, ctx: Any) -> str | None:
        """No type label beside the metavar (``ctx``: the click context)."""
        return None

    def _rich_display_name(self) -> str:
        return self._shown()

    def _usage_display_name(self) -> str:
        return self._shown() if self.required else f"[{self._shown()}]"

    def _shown(self) -> str:
        name = str(self.metavar or self.name)
        return f"{name}..." if self.nargs != 1 else name


class ReadableCommand(TyperCommand):
    """A typer command whose arguments with a metavar are shown by it (no type label)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            if type(param) is TyperArgument and param.metavar:
                param.__class__ = _MetavarArgument
