"""Request limits shared by both adapters. Every number here is a choice; change it here only."""

from __future__ import annotations

__all__ = [
    "BODY_CHUNK_BYTES",
    "DEFAULT_MAX_BATCH_ROWS",
    "DEFAULT_MAX_BODY_BYTES",
    "MAX_ABS_FEATURE",
    "MAX_DRAIN_BYTES",
]

#: Largest request body accepted, in bytes (1 MiB). Larger bodies get 413 without being kept in memory.
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
#: Largest batch accepted by ``POST /predict/batch``, in rows.
DEFAULT_MAX_BATCH_ROWS = 1024
#: An oversized body is read and discarded up to this many bytes so the client can read its 413 cleanly;
#: past it the connection is dropped after the answer.
MAX_DRAIN_BYTES = 256 * 1024 * 1024
#: Largest feature magnitude accepted. Finite but near-overflow values (1e308) turn into infinities inside a
#: scaler or a tree model's float32; 1e30 is past any real feature and safe for both default models.
MAX_ABS_FEATURE = 1e30
#: Read size when streaming a request body, in bytes.
BODY_CHUNK_BYTES = 64 * 1024
