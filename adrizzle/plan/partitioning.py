"""Process-independent hashing of shuffle keys: the same key goes to the same reducer in every
process on every host.

Python salts ``hash()`` of ``str`` and ``bytes`` per process, and ``hash(None)`` is an address
on Python < 3.12, so neither can pick a reducer. ``portable_hash`` is defined structurally for
None, bool, int, float, str, bytes, tuples and frozensets (PySpark's ``portable_hash`` idea,
with CRC32 for text); other hashable keys fall back to ``hash()``, which slots make consistent
by running with a fixed ``PYTHONHASHSEED``.
"""

from __future__ import annotations

import zlib
from typing import Any

_MASK = (1 << 61) - 1


def portable_hash(key: Any) -> int:
    if key is None:
        return 0
    kind = type(key)
    if kind is int or kind is bool or kind is float:
        return hash(key)  # numeric hashes are not salted
    if kind is str:
        return zlib.crc32(key.encode("utf-8", "surrogatepass"))
    if kind is bytes:
        return zlib.crc32(key) ^ 0x5BD1E995
    if kind is tuple:
        h = 0x345678
        for item in key:
            h = ((h * 1000003) ^ portable_hash(item)) & _MASK
        return h ^ len(key)
    if kind is frozenset:
        h = 0
        for item in key:
            h ^= portable_hash(item) * 2654435761 & _MASK
        return h
    return hash(key)


def partition_of(key: Any, partitions: int) -> int:
    return portable_hash(key) % partitions
