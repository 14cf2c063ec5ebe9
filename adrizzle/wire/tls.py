"""TLS for both ports: every peer must present a certificate signed by the cluster's CA.

One ``TlsConfig`` (CA file, certificate, private key) serves both directions: the side that
listens requires and verifies the dialer's certificate, the side that dials verifies the
listener's. Trust is "signed by this CA", not a host name: workers dial each other by IP
address, and every holder of a certificate from the cluster's own CA is a cluster member
anyway. TLS adds confidentiality and a second factor; the HMAC token handshake still runs
inside it.
"""

from __future__ import annotations

import dataclasses
import os
import ssl
from pathlib import Path

from adrizzle.errors import AdrizzleError
from adrizzle.wire.auth import check_private_file


class TlsConfigError(AdrizzleError):
    """The TLS settings are incomplete, unreadable, or expose the private key."""


@dataclasses.dataclass(frozen=True, slots=True)
class TlsConfig:
    ca_file: str
    cert: str
    key: str

    @classmethod
    def from_options(
        cls,
        ca_file: str | os.PathLike[str] | None,
        cert: str | os.PathLike[str] | None,
        key: str | os.PathLike[str] | None,
        *,
        flag_style: bool = False,
    ) -> TlsConfig | None:
        """None when no option is given; all three, checked, or ``TlsConfigError``."""
        if flag_style:
            names = ("--tls-ca-file", "--tls-cert", "--tls-key")
        else:
            names = ("tls_ca_file", "tls_cert", "tls_key")
        given = dict(zip(names, (ca_file, cert, key), strict=True))
        if not any(given.values()):
            return None
        missing = [name for name, value in given.items() if not value]
        if missing:
            raise TlsConfigError(
                f"TLS needs all of {', '.join(names)}; missing {', '.join(missing)}"
            )
        config = cls(str(ca_file), str(cert), str(key))
        config.check()
        return config

    def check(self) -> None:
        """Refuse unreadable files and a private key that group or others may read."""
        for what, path in (("CA file", self.ca_file), ("certificate", self.cert)):
            if not os.access(path, os.R_OK):
                raise TlsConfigError(f"cannot read TLS {what} {path}")
        check_private_file(Path(self.key), "TLS key", TlsConfigError)
        self.server_context()  # load everything once now: a bad file fails at start

    def _load(self, ctx: ssl.SSLContext) -> ssl.SSLContext:
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.verify_mode = ssl.CERT_REQUIRED
        try:
            ctx.load_cert_chain(self.cert, self.key)
            ctx.load_verify_locations(cafile=self.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise TlsConfigError(
                f"cannot load TLS certificate {self.cert}, key {self.key} or CA file "
                f"{self.ca_file}: {exc}"
            ) from None
        return ctx

    def server_context(self) -> ssl.SSLContext:
        """For a listening port: present our certificate, require the peer's."""
        return self._load(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))

    def client_context(self) -> ssl.SSLContext:
        """For dialing: verify the listener's certificate against the CA, present ours."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False  # trust is the cluster CA's signature (module docstring)
        return self._load(ctx)

    def worker_args(self) -> list[str]:
        """The same settings as ``adrizzle-worker`` flags."""
        return ["--tls-ca-file", self.ca_file, "--tls-cert", self.cert, "--tls-key", self.key]
