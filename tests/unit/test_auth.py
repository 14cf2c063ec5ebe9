"""Unit tests for adrizzle.wire.auth: HMAC proofs and where the token comes from."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from adrizzle.errors import AdrizzleError
from adrizzle.wire import auth
from adrizzle.wire.auth import TOKEN_ENV, TokenError, read_token_file, resolve_token


def _token_file(path: Path, text: str, mode: int) -> Path:
    path.write_text(text)
    os.chmod(path, mode)
    return path


# -- read_token_file ---------------------------------------------------------------------------


def test_token_file_0600_is_accepted_and_stripped(tmp_path: Path) -> None:
    p = _token_file(tmp_path / "token", "  s3cret-token\n", 0o600)
    assert read_token_file(p) == "s3cret-token"
    assert read_token_file(str(p)) == "s3cret-token"


def test_token_file_0400_is_accepted(tmp_path: Path) -> None:
    p = _token_file(tmp_path / "token", "tok", 0o400)
    assert read_token_file(p) == "tok"


def test_token_file_0644_is_refused_with_chmod_advice(tmp_path: Path) -> None:
    p = _token_file(tmp_path / "token", "tok", 0o644)
    with pytest.raises(TokenError) as info:
        read_token_file(p)
    message = str(info.value)
    assert "chmod 600" in message
    assert str(p) in message
    assert "-rw-r--r--" in message


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o610, 0o601, 0o620, 0o602, 0o777])
def test_token_file_with_any_group_or_other_bit_is_refused(tmp_path: Path, mode: int) -> None:
    p = _token_file(tmp_path / "token", "tok", mode)
    with pytest.raises(TokenError, match="chmod 600"):
        read_token_file(p)


@pytest.mark.parametrize("text", ["", "\n", "  \t \n"])
def test_empty_token_file_is_refused(tmp_path: Path, text: str) -> None:
    p = _token_file(tmp_path / "token", text, 0o600)
    with pytest.raises(TokenError, match="is empty"):
        read_token_file(p)


def test_missing_token_file(tmp_path: Path) -> None:
    p = tmp_path / "absent"
    with pytest.raises(TokenError, match="cannot read token file") as info:
        read_token_file(p)
    assert str(p) in str(info.value)


def test_token_error_is_an_adrizzle_error() -> None:
    assert issubclass(TokenError, AdrizzleError)


# -- resolve_token -----------------------------------------------------------------------------


def test_resolve_explicit_beats_file_and_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TOKEN_ENV, "from-env")
    p = _token_file(tmp_path / "token", "from-file", 0o600)
    assert resolve_token("explicit", str(p)) == "explicit"


def test_resolve_explicit_does_not_read_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    bad = _token_file(tmp_path / "token", "from-file", 0o644)  # would be refused if read
    assert resolve_token("explicit", str(bad)) == "explicit"


def test_resolve_file_beats_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, "from-env")
    p = _token_file(tmp_path / "token", "from-file\n", 0o600)
    assert resolve_token(None, str(p)) == "from-file"
    assert resolve_token("", str(p)) == "from-file"


def test_resolve_bad_file_raises_instead_of_falling_back_to_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TOKEN_ENV, "from-env")
    p = _token_file(tmp_path / "token", "from-file", 0o644)
    with pytest.raises(TokenError, match="chmod 600"):
        resolve_token(None, str(p))


def test_resolve_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, "from-env")
    assert TOKEN_ENV == "ADRIZZLE_AUTH_TOKEN"
    assert resolve_token() == "from-env"
    assert resolve_token(None, None) == "from-env"
    assert resolve_token("", "") == "from-env"


def test_resolve_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    assert resolve_token() is None


def test_resolve_empty_env_is_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, "")
    assert resolve_token() is None


# -- nonces, tokens, proofs --------------------------------------------------------------------


def test_nonces_are_fresh_hex() -> None:
    nonces = {auth.new_nonce() for _ in range(100)}
    assert len(nonces) == 100
    for n in nonces:
        assert len(n) == 32
        int(n, 16)


def test_tokens_are_fresh_and_long() -> None:
    tokens = {auth.new_token() for _ in range(100)}
    assert len(tokens) == 100
    assert all(len(t) >= 40 for t in tokens)


def test_transcript_keeps_the_two_hellos_apart() -> None:
    t = auth.transcript(b"ab", b"c")
    assert len(t) == 32
    assert t == auth.transcript(b"ab", b"c")
    assert t != auth.transcript(b"a", b"bc")
    assert t != auth.transcript(b"c", b"ab")


def test_proof_verifies_only_with_same_token_role_and_transcript() -> None:
    digest = auth.transcript(b"client", b"server")
    mac = auth.proof(b"token", "worker", digest)
    assert len(mac) == 64
    int(mac, 16)
    assert auth.verify(b"token", "worker", digest, mac)
    assert not auth.verify(b"other", "worker", digest, mac)
    assert not auth.verify(b"token", "driver", digest, mac)
    assert not auth.verify(b"token", "worker", auth.transcript(b"client", b"server2"), mac)
    assert not auth.verify(b"token", "worker", digest, mac.upper())
    assert not auth.verify(b"token", "worker", digest, "")


@pytest.mark.parametrize("mac", ["世é", "\\z世éz 世éé\\", "ÿ" * 64])
def test_a_non_ascii_mac_fails_verification_instead_of_raising(mac: str) -> None:
    # hmac.compare_digest raises TypeError on non-ASCII str: found by the connection fuzzer.
    digest = auth.transcript(b"a", b"b")
    assert auth.verify(b"token", "client", digest, mac) is False
