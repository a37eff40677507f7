"""What every command module shares: result output and binding the schemas."""

from __future__ import annotations

import sys

from pipeline.settings import Settings, load_settings


def out(text: str = "") -> None:
    """Command output (results for the user), as opposed to log messages on stderr."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def activate() -> Settings:
    """Bind the schemas on the configured server (imports DataJoint: database commands only)."""
    import schemas

    settings = load_settings()
    schemas.activate(settings=settings)
    return settings
