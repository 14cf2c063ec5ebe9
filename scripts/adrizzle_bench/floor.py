"""The floor: a minimal hand-written group-scheduled loop, no engine, for side-by-side ratios.

A uvloop driver and ``workers`` worker processes over loopback TCP. Per group the driver sends
each worker one frame; the worker sums its partitions of 1000 ints for each of the group's
batches and answers with one frame per group. No slots, no auth, no generality: this is what the
design costs in Python when nothing else is paid, so adrizzle is judged against it.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import pickle
import socket
import struct
import time

HEADER = struct.Struct("!I")


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return bytes(buf)


def _worker(port: int, parts: list[int], records: int) -> None:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    data = {p: list(range(p * records, (p + 1) * records)) for p in parts}
    try:
        while True:
            (n,) = HEADER.unpack(_recv_exact(sock, 4))
            group_size = pickle.loads(_recv_exact(sock, n))
            if group_size == 0:
                return
            out = pickle.dumps([[sum(data[p]) for p in parts] for _ in range(group_size)])
            sock.sendall(HEADER.pack(len(out)) + out)
    except EOFError:
        return
    finally:
        sock.close()


async def _drive(
    batches: int, group_size: int, partitions: int, records: int, workers: int
) -> float:
    accepted: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()

    async def on_conn(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await accepted.put((r, w))

    server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_worker, args=(port, list(range(i, partitions, workers)), records))
        for i in range(workers)
    ]
    for p in procs:
        p.start()
    conns = [await accepted.get() for _ in procs]
    try:
        # Warm up once, then time the groups one at a time.
        for _rd, wr in conns:
            msg = pickle.dumps(1)
            wr.write(HEADER.pack(len(msg)) + msg)
        for rd, _wr in conns:
            (n,) = HEADER.unpack(await rd.readexactly(4))
            await rd.readexactly(n)
        start = time.perf_counter()
        done = 0
        while done < batches:
            g = min(group_size, batches - done)
            msg = pickle.dumps(g)
            for _rd, wr in conns:
                wr.write(HEADER.pack(len(msg)) + msg)
            for rd, _wr in conns:
                (n,) = HEADER.unpack(await rd.readexactly(4))
                pickle.loads(await rd.readexactly(n))
            done += g
        elapsed = time.perf_counter() - start
        for _rd, wr in conns:
            msg = pickle.dumps(0)
            wr.write(HEADER.pack(len(msg)) + msg)
        return elapsed / batches * 1e3
    finally:
        for _rd, wr in conns:
            wr.close()
        server.close()
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
                p.join()


async def floor_ms_per_batch_async(
    batches: int, group_size: int, partitions: int = 4, records: int = 1000, workers: int = 2
) -> float:
    return await _drive(batches, group_size, partitions, records, workers)


def floor_ms_per_batch(
    batches: int, group_size: int, partitions: int = 4, records: int = 1000, workers: int = 2
) -> float:
    import uvloop

    return uvloop.run(_drive(batches, group_size, partitions, records, workers))


if __name__ == "__main__":
    for g in (1, 10, 100):
        print(g, f"{floor_ms_per_batch(200, g):.4f} ms per micro-batch")
