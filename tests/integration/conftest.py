"""Integration fixtures: the two session recordings ingested once."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def session_scans(db, synth_dir) -> list[str]:
    """Data keys of the two small session recordings, ingested (other tests ingest more scans)."""
    from schemas.data import ingest

    return [
        ingest(z, cache_dir=db.cache_dir, progress=False).data_key for z in sorted(synth_dir.glob("*.zip"))
    ]
