"""The floors: minimal hand-written group-scheduled loops, no engine, for side-by-side ratios.

A uvloop driver and ``workers`` worker processes over loopback TCP. Per group the driver sends
each worker one frame; the worker sums its partitions of 1000 ints for each of the group's
batches and answers with one frame per group. No slots, no auth, no generality: this is what the
design costs in Python when nothing else is paid, so adrizzle is judged against it. With
``relay=True`` a process that only forwards bytes sits between the driver and each worker: the
shape of adrizzle's worker runtime and its slot, to show what that hop alone costs. The second
floor (below) is the same loop with a pre-scheduled shuffle between the workers.
"""

from __future__ import annotations

import asyncio
import functools
import multiprocessing
import operator
import os
import pickle
import select
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


def _serve_groups(sock: socket.socket, parts: list[int], records: int) -> None:
    """The worker's loop: per group frame, sum each partition for each batch, answer once."""
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


def _dial(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _worker(port: int, parts: list[int], records: int) -> None:
    _serve_groups(_dial(port), parts, records)


def _relay_worker(port: int, parts: list[int], records: int) -> None:
    """The design's process shape with nothing else paid: this process only relays bytes
    between the driver and a child that runs the groups (a worker runtime and its slot)."""
    driver = _dial(port)
    mine, child_end = socket.socketpair()
    pid = os.fork()
    if pid == 0:  # the slot
        driver.close()
        mine.close()
        _serve_groups(child_end, parts, records)
        os._exit(0)
    child_end.close()
    other = {driver: mine, mine: driver}
    try:
        while True:
            readable, _w, _x = select.select([driver, mine], [], [])
            for sock in readable:
                data = sock.recv(1 << 16)
                if not data:
                    return
                other[sock].sendall(data)
    finally:
        driver.close()
        mine.close()
        os.waitpid(pid, 0)


def _shut(
    server: asyncio.Server,
    writers: list[asyncio.StreamWriter],
    procs: list[multiprocessing.process.BaseProcess],
) -> None:
    """Close the driver's connections and server; reap the worker processes (killed after
    5 s)."""
    for wr in writers:
        wr.close()
    server.close()
    for p in procs:
        p.join(timeout=5)
        if p.is_alive():
            p.kill()
            p.join()


async def _drive(
    batches: int, group_size: int, partitions: int, records: int, workers: int, relay: bool = False
) -> float:
    accepted: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()

    async def on_conn(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await accepted.put((r, w))

    server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(
            target=_relay_worker if relay else _worker,
            args=(port, list(range(i, partitions, workers)), records),
        )
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
        _shut(server, [wr for _rd, wr in conns], procs)


async def floor_ms_per_batch_async(
    batches: int,
    group_size: int,
    partitions: int = 4,
    records: int = 1000,
    workers: int = 2,
    relay: bool = False,
) -> float:
    """ms per micro-batch of the single-stage floor; ``relay``: with a byte-relaying process
    between the driver and each worker (driver -> worker runtime -> slot, adrizzle's shape)."""
    return await _drive(batches, group_size, partitions, records, workers, relay)


def floor_ms_per_batch(
    batches: int, group_size: int, partitions: int = 4, records: int = 1000, workers: int = 2
) -> float:
    import uvloop

    return uvloop.run(_drive(batches, group_size, partitions, records, workers))


# -- the pre-scheduled shuffle floor --------------------------------------------------------
#
# The same driver loop; each worker also holds a TCP link to every other worker. Per group the
# driver sends each worker one frame; the worker runs its map partitions (``(x % keys, 1)``,
# combined per key) for every batch of the group, pushes ONE frame per peer with all the
# group's blocks for that peer's reducers (reducer r lives on worker r % workers), keeps its
# own, reads one frame from each peer, reduces, and answers with one frame per group. This is
# Drizzle's pre-scheduled shuffle with nothing else paid: no slots, no auth, no generality.
# (A group's blocks are a few KB, far below the loopback socket buffers, so sending to every
# peer before reading from any cannot block.)


def _recv_frame(sock: socket.socket) -> bytes:
    (n,) = HEADER.unpack(_recv_exact(sock, 4))
    return _recv_exact(sock, n)


def _send_frame(sock: socket.socket, obj: object) -> None:
    out = pickle.dumps(obj, protocol=5)
    sock.sendall(HEADER.pack(len(out)) + out)


def _key_one(keys: int, x: int) -> tuple[int, int]:
    return (x % keys, 1)


def _shuffle_worker(port: int, me: int, workers: int, spec: tuple[int, int, int, int]) -> None:
    partitions, records, keys, reducers = spec
    mine = list(range(me, partitions, workers))
    data = {p: list(range(p * records, (p + 1) * records)) for p in mine}
    listener = socket.create_server(("127.0.0.1", 0))
    driver = socket.create_connection(("127.0.0.1", port))
    driver.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    _send_frame(driver, (me, listener.getsockname()[1]))
    ports: list[int] = pickle.loads(_recv_frame(driver))
    peers: dict[int, socket.socket] = {}
    for j in range(me):  # dial the lower ones, accept the higher ones
        peer = socket.create_connection(("127.0.0.1", ports[j]))
        peer.sendall(HEADER.pack(me))
        peers[j] = peer
    for _ in range(me + 1, workers):
        peer, _addr = listener.accept()
        (j,) = HEADER.unpack(_recv_exact(peer, 4))
        peers[j] = peer
    for peer in peers.values():
        peer.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    my_reducers = [r for r in range(reducers) if r % workers == me]
    mapper = functools.partial(_key_one, keys)
    try:
        while True:
            group_size = pickle.loads(_recv_frame(driver))
            if group_size == 0:
                return
            # outgoing[w]: (batch, reducer, {key: count}) for worker w's reducers
            outgoing: list[list[tuple[int, int, dict[int, int]]]] = [[] for _ in range(workers)]
            for batch in range(group_size):
                for p in mine:
                    # The user's functions are called as in adrizzle: map, then combine.
                    combined: dict[int, int] = {}
                    for k, v in map(mapper, data[p]):
                        combined[k] = operator.add(combined[k], v) if k in combined else v
                    blocks: list[dict[int, int]] = [{} for _ in range(reducers)]
                    for k, v in combined.items():
                        blocks[hash(k) % reducers][k] = v
                    for r, block in enumerate(blocks):
                        outgoing[r % workers].append((batch, r, block))
            for j, peer in peers.items():
                _send_frame(peer, outgoing[j])
            arrived = outgoing[me]
            for peer in peers.values():
                arrived += pickle.loads(_recv_frame(peer))
            reduced = [{r: {} for r in my_reducers} for _ in range(group_size)]
            for batch, r, block in arrived:
                acc = reduced[batch][r]
                for k, v in block.items():
                    acc[k] = operator.add(acc[k], v) if k in acc else v
            _send_frame(driver, [[sorted(acc.items()) for acc in b.values()] for b in reduced])
    except EOFError:
        return
    finally:
        for sock in (driver, listener, *peers.values()):
            sock.close()


async def _drive_shuffle(
    batches: int, group_size: int, spec: tuple[int, int, int, int], workers: int
) -> float:
    partitions, records, keys, _reducers = spec
    expected = sorted((k, partitions * records // keys) for k in range(keys))
    accepted: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()

    async def on_conn(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await accepted.put((r, w))

    async def read(rd: asyncio.StreamReader) -> object:
        (n,) = HEADER.unpack(await rd.readexactly(4))
        return pickle.loads(await rd.readexactly(n))

    def send(wr: asyncio.StreamWriter, obj: object) -> None:
        msg = pickle.dumps(obj, protocol=5)
        wr.write(HEADER.pack(len(msg)) + msg)

    server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_shuffle_worker, args=(port, i, workers, spec)) for i in range(workers)
    ]
    for p in procs:
        p.start()
    conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = [None] * workers  # type: ignore[list-item]
    ports = [0] * workers
    try:
        for _ in procs:
            rd, wr = await accepted.get()
            me, peer_port = await read(rd)  # type: ignore[misc]
            conns[me], ports[me] = (rd, wr), peer_port
        for _rd, wr in conns:
            send(wr, ports)

        async def one_group(g: int) -> None:
            for _rd, wr in conns:
                send(wr, g)
            answers = [await read(rd) for rd, _wr in conns]
            for batch in range(g):  # every micro-batch's answer is checked
                got = sorted(kv for a in answers for part in a[batch] for kv in part)  # type: ignore[index]
                assert got == expected, got

        await one_group(1)  # warm up
        start = time.perf_counter()
        done = 0
        while done < batches:
            g = min(group_size, batches - done)
            await one_group(g)
            done += g
        elapsed = time.perf_counter() - start
        for _rd, wr in conns:
            send(wr, 0)
        return elapsed / batches * 1e3
    finally:
        _shut(server, [conn[1] for conn in conns if conn is not None], procs)


async def shuffle_floor_ms_per_batch_async(
    batches: int,
    group_size: int,
    partitions: int = 4,
    records: int = 100,
    keys: int = 16,
    reducers: int = 2,
    workers: int = 2,
) -> float:
    """ms per micro-batch of the hand-written pre-scheduled shuffle (map ``(x % keys, 1)``
    combined per key over ``partitions`` x ``records`` ints, into ``reducers`` reducers)."""
    return await _drive_shuffle(batches, group_size, (partitions, records, keys, reducers), workers)


def main() -> None:
    """``python scripts/floor.py``: both floors at G = 1, 10, 100."""
    import uvloop

    for g in (1, 10, 100):
        single = floor_ms_per_batch(200, g)
        shuffle = uvloop.run(shuffle_floor_ms_per_batch_async(max(200, 2 * g), g))
        print(f"G={g}: single stage {single:.4f} ms, pre-scheduled shuffle {shuffle:.4f} ms")


if __name__ == "__main__":
    main()
