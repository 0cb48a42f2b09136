#!/usr/bin/env python3
"""A TCP proxy that adds a fixed one-way delay: a slow network for benchmarks.

Usage: bench/delay_proxy.py LISTEN_PORT TARGET_HOST TARGET_PORT [DELAY_MS]   (DELAY_MS default 2.5)

Listens on 127.0.0.1:LISTEN_PORT and forwards every connection to TARGET_HOST:TARGET_PORT. Each
chunk read in either direction is written DELAY_MS milliseconds after it was read, in order, so a
request/response round trip gains 2 * DELAY_MS. Only latency is added: reading goes on while
earlier chunks wait, so bandwidth is not limited (a long fat pipe, not a slow one).

Threads, not asyncio: time.sleep() sleeps to the microsecond, asyncio's event loop rounds its
timeouts up to whole milliseconds (2.5 ms would become 3 ms or more). Two threads per direction:
one reads and stamps each chunk with its due time, one waits for that time and writes.
Standard library only. Prints "ready" on stdout once it listens; stops on SIGTERM or SIGINT.
"""
import queue
import signal
import socket
import sys
import threading
import time


def pump(src: socket.socket, dst: socket.socket, delay: float, done) -> None:
    """Copies src to dst, each chunk `delay` seconds after it arrived; ends by half-closing dst."""
    chunks: "queue.SimpleQueue[tuple[float, bytes]]" = queue.SimpleQueue()

    def reader() -> None:
        try:
            while True:
                data = src.recv(262144)
                chunks.put((time.monotonic() + delay, data))
                if not data:
                    return
        except OSError:
            chunks.put((0.0, b""))

    def writer() -> None:
        try:
            while True:
                due, data = chunks.get()
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                if not data:
                    dst.shutdown(socket.SHUT_WR)
                    return
                dst.sendall(data)
        except OSError:
            pass
        finally:
            done()

    threading.Thread(target=reader, daemon=True).start()
    threading.Thread(target=writer, daemon=True).start()


def serve(client: socket.socket, host: str, port: int, delay: float) -> None:
    try:
        upstream = socket.create_connection((host, port))
    except OSError:
        client.close()
        return
    for s in (client, upstream):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    left = [2]
    lock = threading.Lock()

    def done() -> None:  # both directions finished (or failed): close both sockets
        with lock:
            left[0] -= 1
            if left[0] > 0:
                return
        for s in (client, upstream):
            try:  # shutdown() wakes a reader still blocked in recv(); close() alone would not
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    pump(client, upstream, delay, done)
    pump(upstream, client, delay, done)


def main() -> None:
    if len(sys.argv) not in (4, 5):
        sys.exit(__doc__.split("\n\n")[1])
    listen_port, host, port = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    delay = float(sys.argv[4] if len(sys.argv) == 5 else 2.5) / 1000.0
    # Threads waiting for the GIL behind a busy one wait up to the switch interval (5 ms by
    # default): far too coarse next to the delay being simulated.
    sys.setswitchinterval(0.0001)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", listen_port))
    server.listen(64)
    print("ready", flush=True)
    try:
        while True:
            client, _ = server.accept()
            serve(client, host, port, delay)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
