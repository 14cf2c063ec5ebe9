"""Mutual HMAC-SHA256 challenge over the handshake transcript, and where tokens come from.

Each side's proof is ``HMAC(token, "adrizzle-auth|<client or server>|" + sha256(client hello meta
+ server hello meta))``. Both hellos carry fresh random nonces, so a proof is bound to this one
connection and cannot be replayed. The prover's *side* (which end dialed, known locally to both
ends, never taken from the peer's hello) is in the MAC, so a proof cannot be reflected back to its
sender, not even by a peer that claims the sender's own role. The client (the side that dialed)
proves first; the server proves only to a peer that has already proven itself, so a stranger who
merely connects learns nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
from pathlib import Path

from adrizzle.errors import AdrizzleError

TOKEN_ENV = "ADRIZZLE_AUTH_TOKEN"


def new_nonce() -> str:
    return secrets.token_hex(16)


def new_token() -> str:
    return secrets.token_urlsafe(32)


def transcript(client_hello: bytes, server_hello: bytes) -> bytes:
    return hashlib.sha256(client_hello + b"\x00" + server_hello).digest()


def proof(token: bytes, role: str, transcript_digest: bytes) -> str:
    msg = b"adrizzle-auth|" + role.encode() + b"|" + transcript_digest
    return hmac.new(token, msg, hashlib.sha256).hexdigest()


def verify(token: bytes, role: str, transcript_digest: bytes, mac: str) -> bool:
    # compare_digest refuses non-ASCII str with a TypeError: a peer's garbage MAC must fail
    # authentication like any other wrong MAC, not break the handshake code.
    return mac.isascii() and hmac.compare_digest(proof(token, role, transcript_digest), mac)


class TokenError(AdrizzleError):
    """No usable token: missing, empty, or in a file others can read."""


def check_private_file(p: Path, label: str, error: type[Exception]) -> None:
    """Raise ``error`` unless ``p`` exists and only its owner may read it (a secret)."""
    try:
        mode = p.stat().st_mode
    except OSError as exc:
        raise error(f"cannot read {label} {p}: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise error(
            f"{label} {p} is readable by group or others (mode {stat.filemode(mode)}); "
            f"run: chmod 600 {p}"
        )


def read_token_file(path: str | os.PathLike[str]) -> str:
    """Read a token file, refusing one that group or others may read."""
    p = Path(path)
    check_private_file(p, "token file", TokenError)
    token = p.read_text().strip()
    if not token:
        raise TokenError(f"token file {p} is empty")
    return token


def resolve_token(token: str | None = None, token_file: str | None = None) -> str | None:
    """The explicit token, else the token file, else ``$ADRIZZLE_AUTH_TOKEN``, else None."""
    if token:
        return token
    if token_file:
        return read_token_file(token_file)
    return os.environ.get(TOKEN_ENV) or None
