"""The pure-Python stand-in for ``fastpeer.c`` (same command line, same behaviour), used only
where no C compiler is found. Slower: the table labels figures taken with it.

    python -m bench.peer server PORT
    python -m bench.peer client HOST PORT PATH CONNS WINDOW SIZE SECONDS WARMUP [HEADER ...]
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import struct
import sys
import time

SMALL_BODY = b"fastpeer says hello: this body is 128 bytes long, padded with dots".ljust(127, b".") + b"\n"
BIG_CHUNK = b"x" * (1 << 18)
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
HEAD, DISCARD, WS = range(3)


def _unmask(data: bytes, mask: bytes) -> bytes:
    n = len(data)
    if not n or mask == b"\0\0\0\0":
        return data
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")


def frame_header(b0: int, length: int, masked: bool) -> bytes:
    m = 0x80 if masked else 0
    if length < 126:
        return bytes((b0, m | length))
    if length < 65536:
        return struct.pack("!BBH", b0, m | 126, length)
    return struct.pack("!BBQ", b0, m | 127, length)


class ServerProtocol(asyncio.Protocol):
    def connection_made(self, transport) -> None:
        self.transport = transport
        self.buf = b""
        self.mode = HEAD
        self.discard = 0
        self.sending = 0
        self.paused = False
        self.closing = False

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self.process()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self.send_bytes()

    def send_bytes(self) -> None:
        while self.sending and not self.paused:
            n = min(self.sending, len(BIG_CHUNK))
            self.transport.write(BIG_CHUNK[:n] if n < len(BIG_CHUNK) else BIG_CHUNK)
            self.sending -= n
        if not self.sending and self.buf:
            self.process()

    def process(self) -> None:
        out = []
        while not self.sending and not self.closing:
            buf = self.buf
            if self.mode == DISCARD:
                k = min(len(buf), self.discard)
                self.buf = buf[k:]
                self.discard -= k
                if self.discard:
                    break
                self.mode = HEAD
                out.append(b"HTTP/1.1 204 No Content\r\n\r\n")
                continue
            if self.mode == WS:
                if len(buf) < 2:
                    break
                b0, b1 = buf[0], buf[1]
                plen, h = b1 & 0x7F, 2
                if plen == 126:
                    if len(buf) < 4:
                        break
                    plen, h = struct.unpack_from("!H", buf, 2)[0], 4
                elif plen == 127:
                    if len(buf) < 10:
                        break
                    plen, h = struct.unpack_from("!Q", buf, 2)[0], 10
                mask = b"\0\0\0\0"
                if b1 & 0x80:
                    mask, h = buf[h : h + 4], h + 4
                if len(buf) < h + plen:
                    break
                op = b0 & 0x0F
                if op != 0xA:
                    ob0 = (b0 & 0xF0) | 0xA if op == 9 else b0
                    out.append(frame_header(ob0, plen, False) + _unmask(buf[h : h + plen], mask))
                self.buf = buf[h + plen :]
                if op == 8:
                    self.closing = True
                continue
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > 65536:
                    self.transport.abort()
                break
            lines = buf[:end].split(b"\r\n")
            self.buf = buf[end + 4 :]
            path = lines[0].split(b" ")[1] if lines[0].count(b" ") >= 2 else b"/"
            hdrs = {}
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                hdrs[name.strip().lower()] = value.strip()
            close = b"close" in hdrs.get(b"connection", b"").lower()
            if b"websocket" in hdrs.get(b"upgrade", b"").lower() and b"sec-websocket-key" in hdrs:
                accept = base64.b64encode(hashlib.sha1(hdrs[b"sec-websocket-key"] + WS_GUID).digest())
                out.append(
                    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
                )
                self.mode = WS
                continue
            clen = int(hdrs.get(b"content-length", b"0") or 0)
            if clen:
                if b"100-continue" in hdrs.get(b"expect", b"").lower():
                    out.append(b"HTTP/1.1 100 Continue\r\n\r\n")
                self.mode, self.discard = DISCARD, clen
                continue
            extra = b"Connection: close\r\n" if close else b""
            if path.startswith(b"/bytes/"):
                n = int(path[7:])
                out.append(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n" % (n, extra))
                self.sending = n
            else:
                out.append(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n%s\r\n%s"
                    % (len(SMALL_BODY), extra, SMALL_BODY)
                )
            if close:
                self.closing = True
        if out:
            self.transport.write(b"".join(out))
        if self.sending:
            self.send_bytes()
        if self.closing and not self.sending:
            self.transport.close()


class ClientProtocol(asyncio.Protocol):
    """One WebSocket connection keeping ``window`` messages in flight (after the handshake)."""

    def __init__(self, frame: bytes, window: int, stats: dict, handshake: bytes) -> None:
        self.frame = frame
        self.window = window
        self.stats = stats
        self.handshake = handshake
        self.buf = b""
        self.upgraded = asyncio.get_running_loop().create_future()

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(self.handshake)

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data
        if not self.upgraded.done():
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buf = buf
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                self.upgraded.set_exception(RuntimeError(buf[:200].decode("latin-1")))
                return
            self.upgraded.set_result(True)
            buf = buf[end + 4 :]
            self.transport.write(self.frame * self.window)
        got = 0
        nbytes = 0
        while len(buf) >= 2:
            plen, h = buf[1] & 0x7F, 2
            if plen == 126:
                if len(buf) < 4:
                    break
                plen, h = struct.unpack_from("!H", buf, 2)[0], 4
            elif plen == 127:
                if len(buf) < 10:
                    break
                plen, h = struct.unpack_from("!Q", buf, 2)[0], 10
            if len(buf) < h + plen:
                break
            buf = buf[h + plen :]
            got += 1
            nbytes += plen
        self.buf = buf
        if got:
            self.stats["messages"] += got
            self.stats["bytes"] += nbytes
            self.transport.write(self.frame * got)

    def connection_lost(self, exc) -> None:
        self.stats["errors"] += 1


async def run_client(argv: list[str]) -> None:
    host, port, path = argv[0], int(argv[1]), argv[2]
    conns, window, size = int(argv[3]), int(argv[4]), int(argv[5])
    secs, warm = float(argv[6]), float(argv[7])
    extra = "".join(h + "\r\n" for h in argv[8:])
    handshake = (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    ).encode()
    frame = frame_header(0x82, size, True) + b"\0\0\0\0" + b"m" * size  # zero mask: no XOR needed
    stats = {"messages": 0, "bytes": 0, "errors": 0}
    loop = asyncio.get_running_loop()
    protos = []
    for _ in range(conns):
        _, proto = await loop.create_connection(
            lambda: ClientProtocol(frame, window, stats, handshake), host, port
        )
        await proto.upgraded
        protos.append(proto)
    await asyncio.sleep(warm)
    m0, b0, t0 = stats["messages"], stats["bytes"], time.monotonic()
    await asyncio.sleep(secs)
    m1, b1, t1, errors = stats["messages"], stats["bytes"], time.monotonic(), stats["errors"]
    for p in protos:
        p.transport.abort()
    print(f"messages={m1 - m0} bytes={b1 - b0} seconds={t1 - t0:.6f} errors={errors}")


async def run_server(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(ServerProtocol, "127.0.0.1", port, backlog=4096)
    print(f"LISTENING {server.sockets[0].getsockname()[1]}", flush=True)
    await server.serve_forever()


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "server":
        asyncio.run(run_server(int(argv[1])))
        return 0
    if len(argv) >= 9 and argv[0] == "client":
        asyncio.run(run_client(argv[1:]))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
