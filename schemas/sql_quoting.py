"""Quoting for the SQL this project writes itself (roles, worker functions, views), in one place."""

from __future__ import annotations


def quote_ident(name: str) -> str:
    """A quoted SQL identifier: ``name`` in double quotes, inner double quotes doubled."""
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    """A SQL string literal: ``text`` in single quotes, inner single quotes doubled."""
    return "'" + text.replace("'", "''") + "'"
