"""Unit tests for adrizzle.wire.tls: which TLS settings are accepted, and the contexts made."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import trustme

from adrizzle.errors import AdrizzleError
from adrizzle.wire.tls import TlsConfig, TlsConfigError


@pytest.fixture
def files(tmp_path: Path) -> tuple[str, str, str]:
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1")
    ca_file, cert, key = tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    issued.cert_chain_pems[0].write_to_path(str(cert))
    issued.private_key_pem.write_to_path(str(key))
    key.chmod(0o600)
    return str(ca_file), str(cert), str(key)


def test_no_options_means_no_tls() -> None:
    assert TlsConfig.from_options(None, None, None) is None
    assert TlsConfig.from_options("", "", "") is None


@pytest.mark.parametrize("missing", [0, 1, 2])
def test_partial_options_name_what_is_missing(files: tuple[str, str, str], missing: int) -> None:
    given: list[str | None] = list(files)
    given[missing] = None
    names = ["tls_ca_file", "tls_cert", "tls_key"]
    with pytest.raises(TlsConfigError, match=f"missing {names[missing]}$"):
        TlsConfig.from_options(*given)
    flags = ["--tls-ca-file", "--tls-cert", "--tls-key"]
    with pytest.raises(TlsConfigError, match=f"missing {flags[missing]}$"):
        TlsConfig.from_options(*given, flag_style=True)


def test_complete_options(files: tuple[str, str, str]) -> None:
    config = TlsConfig.from_options(*files)
    assert config == TlsConfig(*files)
    assert config.worker_args() == [
        "--tls-ca-file", files[0], "--tls-cert", files[1], "--tls-key", files[2]
    ]  # fmt: skip


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_key_readable_by_others_is_refused(files: tuple[str, str, str], mode: int) -> None:
    Path(files[2]).chmod(mode)
    with pytest.raises(TlsConfigError, match=f"chmod 600 {files[2]}"):
        TlsConfig.from_options(*files)


def test_missing_or_bad_files(files: tuple[str, str, str], tmp_path: Path) -> None:
    ca_file, cert, key = files
    with pytest.raises(TlsConfigError, match="cannot read TLS CA file"):
        TlsConfig.from_options(str(tmp_path / "absent"), cert, key)
    with pytest.raises(TlsConfigError, match="cannot read TLS key"):
        TlsConfig.from_options(ca_file, cert, str(tmp_path / "absent"))
    with pytest.raises(TlsConfigError, match="cannot load TLS certificate"):
        TlsConfig.from_options(ca_file, ca_file, key)  # the CA's certificate, not for this key
    assert issubclass(TlsConfigError, AdrizzleError)


def test_both_contexts_require_the_peer_certificate(files: tuple[str, str, str]) -> None:
    config = TlsConfig(*files)
    server, client = config.server_context(), config.client_context()
    for ctx in (server, client):
        assert ctx.verify_mode is ssl.CERT_REQUIRED
        assert ctx.minimum_version >= ssl.TLSVersion.TLSv1_2
        assert len(ctx.get_ca_certs()) == 1
    # Trust is the cluster CA's signature: workers dial each other by IP address.
    assert client.check_hostname is False
