"""Firestore document ids for free-text keys: one rule for every Firestore adapter."""

from __future__ import annotations

import hashlib

__all__ = ["doc_id"]


def doc_id(key: str) -> str:
    """A document id for any key: Lago codes, event ids and dedup keys are free text, and a raw
    one could hold '/' or be '.', '..' or '__x__', which Firestore refuses as ids. The SHA-256
    keeps ids short, valid and evenly spread."""
    return hashlib.sha256(key.encode()).hexdigest()
