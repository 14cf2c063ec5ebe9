"""TLS on both ports with real workers: mutual certificate checks, and every way to get it wrong.

Certificates are made at test time by ``trustme``: one CA for the cluster, one rogue CA whose
certificates must be refused everywhere.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import operator
import os
import random
import ssl
import subprocess
from pathlib import Path

import pytest
import trustme

import adrizzle
from adrizzle.driver.local import worker_command
from adrizzle.wire.framing import HEADER, encode_frame
from adrizzle.wire.tls import TlsConfig
from tests import hostile
from tests.conftest import wait_exit

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

TOKEN = "tls-test-token"


@dataclasses.dataclass(frozen=True)
class Pki:
    ca_file: str
    cert: str
    key: str

    def engine_kwargs(self) -> dict[str, str]:
        return {"tls_ca_file": self.ca_file, "tls_cert": self.cert, "tls_key": self.key}

    def flags(self) -> list[str]:
        return ["--tls-ca-file", self.ca_file, "--tls-cert", self.cert, "--tls-key", self.key]

    def client_context(self) -> ssl.SSLContext:
        return TlsConfig(self.ca_file, self.cert, self.key).client_context()


def make_pki(directory: Path, name: str) -> Pki:
    directory.mkdir()
    ca = trustme.CA(organization_name=f"adrizzle test {name}")
    issued = ca.issue_cert("127.0.0.1", "localhost")
    ca_file, cert, key = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    cert.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    issued.private_key_pem.write_to_path(str(key))
    key.chmod(0o600)
    return Pki(str(ca_file), str(cert), str(key))


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "cluster", "cluster")


@pytest.fixture
def rogue(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "rogue", "rogue")


def spawn(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "ADRIZZLE_AUTH_TOKEN": TOKEN}
    return subprocess.Popen(
        [*worker_command(), *args, "--cores", "1", "--connect-timeout", "10"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "ERROR" in line]


async def test_cluster_runs_jobs_over_tls_on_both_ports(pki: Pki) -> None:
    async with adrizzle.Engine.local(workers=2, cores=1, **pki.engine_kwargs()) as engine:
        assert [w["tls"] for w in engine.workers] == ["TLSv1.3", "TLSv1.3"]
        data = engine.parallelize(range(100), partitions=4)
        assert await engine.run_jobs([data] * 2, sum, timeout=30) == [[300, 925, 1550, 2175]] * 2
        # A shuffle: map outputs cross between the workers' data ports, over TLS.
        pairs = engine.parallelize([(i % 5, 1) for i in range(100)], partitions=4)
        for pre_schedule in (True, False):
            [parts] = await engine.run_jobs(
                [pairs.reduce_by_key(operator.add, 4)], list, pre_schedule=pre_schedule
            )
            assert sorted(kv for part in parts for kv in part) == [(k, 20) for k in range(5)]
        # The data port speaks TLS too: a client with the cluster's certificate gets in...
        host, port = hostile.split_address(engine.workers[0]["data_address"])
        reader, writer = await asyncio.open_connection(host, port, ssl=pki.client_context())
        header = await asyncio.wait_for(reader.readexactly(HEADER.size), 10)
        hello = await reader.readexactly(HEADER.unpack(header)[0])
        assert b'"t":"hello"' in hello
        # ...but without the token it gets no further.
        mine = hostile.hello_meta()
        writer.write(encode_frame(mine) + hostile.proof_frame("wrong", mine, header + hello))
        reply = hostile.Reply(await asyncio.wait_for(reader.read(), 10), True, False)
        writer.close()
        assert any("does not hold the token" in r for r in reply.errors())
        assert "auth" not in reply.tags()


async def test_plain_worker_is_refused_by_a_tls_driver(
    pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="adrizzle")
    async with adrizzle.Engine(listen="127.0.0.1:0", token=TOKEN, **pki.engine_kwargs()) as e:
        code, err = await wait_exit(spawn(f"tcp://{e.address}"))
        assert e.workers == []
    assert code == 1
    [line] = error_lines(err)
    assert "refused us" in line
    assert "--tls-ca-file" in line  # the hint
    [warning] = [r.getMessage() for r in caplog.records if "refused a connection" in r.getMessage()]
    assert "TLS handshake" in warning


async def test_tls_worker_is_refused_by_a_plain_driver(pki: Pki) -> None:
    async with adrizzle.Engine(listen="127.0.0.1:0", token=TOKEN) as engine:
        code, err = await wait_exit(spawn(f"tcp://{engine.address}", *pki.flags()))
        assert engine.workers == []
    assert code == 1
    [line] = error_lines(err)
    assert "TLS handshake with driver" in line


async def test_worker_with_a_rogue_certificate_is_refused(
    pki: Pki, rogue: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    # The worker trusts the cluster CA but presents a certificate from another CA.
    caplog.set_level(logging.WARNING, logger="adrizzle")
    mixed = ["--tls-ca-file", pki.ca_file, "--tls-cert", rogue.cert, "--tls-key", rogue.key]
    async with adrizzle.Engine(listen="127.0.0.1:0", token=TOKEN, **pki.engine_kwargs()) as e:
        code, err = await wait_exit(spawn(f"tcp://{e.address}", *mixed))
        assert e.workers == []
    assert code == 1, err
    assert len(error_lines(err)) == 1, err
    warnings = [r.getMessage() for r in caplog.records if "refused a connection" in r.getMessage()]
    assert len(warnings) == 1
    assert "certificate" in warnings[0].lower()


async def test_worker_refuses_a_driver_with_a_rogue_certificate(pki: Pki, rogue: Pki) -> None:
    # The driver presents a certificate the worker's CA did not sign: the worker must not go on.
    async with adrizzle.Engine(listen="127.0.0.1:0", token=TOKEN, **rogue.engine_kwargs()) as e:
        code, err = await wait_exit(spawn(f"tcp://{e.address}", *pki.flags()))
        assert e.workers == []
    assert code == 1
    [line] = error_lines(err)
    assert "TLS handshake with driver" in line
    assert "certificate verify failed" in line


async def read_hello_over_tls(host: str, port: int, context: ssl.SSLContext) -> bytes:
    # TLS 1.3: the client's handshake may "succeed" before the server has checked its
    # certificate; the server's refusal then arrives as an error on the first read.
    reader, writer = await asyncio.open_connection(host, port, ssl=context)
    try:
        header = await asyncio.wait_for(reader.readexactly(HEADER.size), 10)
        return await asyncio.wait_for(reader.readexactly(HEADER.unpack(header)[0]), 10)
    finally:
        writer.close()


async def test_tls_port_refuses_clients_without_a_valid_certificate(pki: Pki, rogue: Pki) -> None:
    async with adrizzle.Engine(listen="127.0.0.1:0", token=TOKEN, **pki.engine_kwargs()) as e:
        host, port = hostile.split_address(e.address)
        # No client certificate at all; then one from the rogue CA.
        no_cert = ssl.create_default_context(cafile=pki.ca_file)
        no_cert.check_hostname = False
        rogue_cert = TlsConfig(pki.ca_file, rogue.cert, rogue.key).client_context()
        for context in (no_cert, rogue_cert):
            with pytest.raises((ssl.SSLError, ConnectionResetError, asyncio.IncompleteReadError)):
                await read_hello_over_tls(host, port, context)
        # Plain TCP noise never reaches the protocol: the port just closes.
        streams = [s for s, _ in hostile.random_streams(random.Random(7), 300)]
        replies = await hostile.attack_many(e.address, streams)
        assert all(r.closed for r in replies)
        assert not any(b'"t":"hello"' in r.data for r in replies)  # nothing in the clear
        assert e.workers == []


async def test_connections_stalled_before_tls_count_against_the_cap(pki: Pki) -> None:
    cap = 8
    async with adrizzle.Engine(
        listen="127.0.0.1:0",
        token=TOKEN,
        handshake_timeout=60,  # longer than this test: only the cap can close anything
        max_connections_per_address=cap,
        **pki.engine_kwargs(),
    ) as engine:
        host, port = hostile.split_address(engine.address)
        conns = await asyncio.gather(*(asyncio.open_connection(host, port) for _ in range(cap + 4)))
        # Nothing is sent, not even a TLS ClientHello. Wait until 4 of them are closed.
        reads = [asyncio.ensure_future(reader.read()) for reader, _ in conns]
        closed: set[asyncio.Future[bytes]] = set()
        async with asyncio.timeout(20):
            while len(closed) < 4:
                done, _ = await asyncio.wait(
                    set(reads) - closed, return_when=asyncio.FIRST_COMPLETED
                )
                closed |= done
        assert len(closed) == 4
        await asyncio.sleep(0.2)  # a fifth would be closed at once too, if the cap leaked
        assert sum(r.done() for r in reads) == 4
        assert engine.statistics()["refused_connections"] == {"127.0.0.1": 4}
        for r in reads:
            r.cancel()
        for _, writer in conns:
            writer.close()


async def test_stalled_tls_handshakes_are_closed_at_the_deadline_and_free_their_place(
    pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="adrizzle")
    async with adrizzle.Engine(
        listen="127.0.0.1:0",
        token=TOKEN,
        handshake_timeout=0.5,
        max_connections_per_address=2,
        **pki.engine_kwargs(),
    ) as engine:
        host, port = hostile.split_address(engine.address)
        for _ in range(2):  # twice the cap, in two rounds
            conns = [await asyncio.open_connection(host, port) for _ in range(2)]
            for reader, writer in conns:
                writer.write(b"\x16\x03")  # the first bytes of a ClientHello, then silence
                try:
                    assert await asyncio.wait_for(reader.read(), 20) == b""
                except ConnectionResetError:
                    pass
                writer.close()
        # Had a stalled handshake kept its place, the cap of 2 would refuse these.
        for _ in range(2):
            assert b'"t":"hello"' in await read_hello_over_tls(host, port, pki.client_context())
        assert engine.statistics()["refused_connections"] == {"127.0.0.1": 4}
    [warning] = [r.getMessage() for r in caplog.records if "refused a connection" in r.getMessage()]
    assert "not completed within 0.5 s" in warning


def test_engine_tls_options_are_checked(pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(adrizzle.errors.AdrizzleError, match="missing tls_key"):
        adrizzle.Engine(token=TOKEN, tls_ca_file=pki.ca_file, tls_cert=pki.cert)
    os.chmod(pki.key, 0o640)
    with pytest.raises(adrizzle.errors.AdrizzleError, match="chmod 600"):
        adrizzle.Engine(token=TOKEN, **pki.engine_kwargs())
    os.chmod(pki.key, 0o600)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    with pytest.raises(adrizzle.errors.AdrizzleError, match="cannot load TLS"):
        adrizzle.Engine(token=TOKEN, **{**pki.engine_kwargs(), "tls_ca_file": str(garbage)})


async def test_worker_tls_flags_are_checked(pki: Pki) -> None:
    code, err = await wait_exit(spawn("tcp://127.0.0.1:1", "--tls-cert", pki.cert))
    assert code == 2
    assert "missing --tls-ca-file, --tls-key" in err
    os.chmod(pki.key, 0o644)
    code, err = await wait_exit(spawn("tcp://127.0.0.1:1", *pki.flags()))
    assert code == 2
    assert "chmod 600" in err
