"""The demo container of the README's local stack: a page, its assets, and a WebSocket echo.

    python -m deploy.demo_app --port 8080

Standard library only. Every URL in the page is relative, so it works unchanged behind the
proxy at ``/linx/<service_id>/``: ``app.css``, ``app.js``, and the WebSocket at ``ws`` next to
the page. Prints ``LISTENING <port>`` once ready (``--port 0`` picks a free port).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import html
import signal
import struct
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Linx demo</title>
<link rel="stylesheet" href="app.css">
</head>
<body>
<h1>Linx demo</h1>
<p>This page came from the container through the Linx proxy.</p>
<p id="ws-status">WebSocket: connecting&hellip;</p>
<form id="ws-form"><input id="ws-input" value="hello again" aria-label="message">
<button>Send over WebSocket</button></form>
<h2>Request headers the container received</h2>
<table>
<tr><th>name</th><th>value</th></tr>
{rows}
</table>
<script src="app.js"></script>
</body>
</html>
"""

CSS = """body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 50rem; }
h1 { color: #245; }
#ws-status { padding: .5rem; background: #eef6ee; border-left: 4px solid #4a4; }
table { border-collapse: collapse; width: 100%; font-size: .9rem; }
th, td { text-align: left; border-bottom: 1px solid #ddd; padding: .25rem .5rem; }
td:first-child { white-space: nowrap; font-family: monospace; }
"""

JS = """(function () {
  "use strict";
  var status = document.getElementById("ws-status");
  var scheme = location.protocol === "https:" ? "wss:" : "ws:";
  // relative to the page, so under /linx/<id>/ this is /linx/<id>/ws
  var base = location.pathname.replace(/[^\\/]*$/, "");
  var ws = new WebSocket(scheme + "//" + location.host + base + "ws");
  ws.onopen = function () {
    status.textContent = "WebSocket open, sending...";
    ws.send("hello from the browser");
  };
  ws.onmessage = function (event) {
    status.textContent = "WebSocket echo: " + event.data;
  };
  ws.onerror = function () { status.textContent = "WebSocket error"; };
  ws.onclose = function (event) {
    if (status.textContent.indexOf("WebSocket echo") !== 0) {
      status.textContent = "WebSocket closed (" + event.code + ")";
    }
  };
  document.getElementById("ws-form").onsubmit = function (event) {
    event.preventDefault();
    ws.send(document.getElementById("ws-input").value);
  };
})();
"""


class DemoHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "LinxDemo/1.0"
    head_only = False

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/ws":
            self.websocket()
        elif path in ("/", "/index.html"):
            rows = "\n".join(
                f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>"
                for k, v in self.headers.items()
            )
            self.reply(200, "text/html; charset=utf-8", PAGE.format(rows=rows))
        elif path == "/app.css":
            self.reply(200, "text/css; charset=utf-8", CSS)
        elif path == "/app.js":
            self.reply(200, "text/javascript; charset=utf-8", JS)
        else:
            self.reply(404, "text/plain; charset=utf-8", "not found\n")

    def do_HEAD(self) -> None:
        self.head_only = True
        try:
            self.do_GET()
        finally:
            self.head_only = False

    def reply(self, status: int, ctype: str, text: str) -> None:
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if not self.head_only:
            self.wfile.write(body)

    def websocket(self) -> None:
        key = self.headers.get("Sec-WebSocket-Key", "")
        try:
            valid = len(base64.b64decode(key, validate=True)) == 16
        except (binascii.Error, ValueError):
            valid = False
        if "websocket" not in self.headers.get("Upgrade", "").lower() or not valid:
            self.reply(400, "text/plain; charset=utf-8", "WebSocket upgrade expected\n")
            return
        accept = base64.b64encode(
            hashlib.sha1(key.encode() + WS_GUID, usedforsecurity=False).digest()
        ).decode()
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True
        try:
            self.echo_frames()
        except (ConnectionError, EOFError, OSError):
            pass

    def read_exact(self, n: int) -> bytes:
        data = self.rfile.read(n)
        if len(data) != n:
            raise EOFError
        return data

    def send_frame(self, opcode: int, payload: bytes) -> None:
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", 0x80 | opcode, n)
        elif n < 1 << 16:
            head = struct.pack("!BBH", 0x80 | opcode, 126, n)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 127, n)
        self.wfile.write(head + payload)

    def echo_frames(self) -> None:
        """RFC 6455 echo: reassemble fragments, answer pings, complete the close handshake."""
        message_op, parts = 0, []
        while True:
            b0, b1 = self.read_exact(2)
            opcode, length = b0 & 0x0F, b1 & 0x7F
            if length == 126:
                (length,) = struct.unpack("!H", self.read_exact(2))
            elif length == 127:
                (length,) = struct.unpack("!Q", self.read_exact(8))
            if not b1 & 0x80 or length > 16 * 1024 * 1024:
                self.send_frame(0x8, struct.pack("!H", 1002 if not b1 & 0x80 else 1009))
                return
            mask = self.read_exact(4)
            data, key = self.read_exact(length), (mask * (length // 4 + 1))[:length]
            payload = (int.from_bytes(data, "big") ^ int.from_bytes(key, "big")).to_bytes(length, "big")
            if opcode == 0x8:
                self.send_frame(0x8, payload[:2])
                return
            if opcode == 0x9:
                self.send_frame(0xA, payload)
            elif opcode in (0x0, 0x1, 0x2):
                message_op = opcode or message_op
                parts.append(payload)
                if b0 & 0x80:
                    self.send_frame(message_op, b"".join(parts))
                    message_op, parts = 0, []


class QuietServer(ThreadingHTTPServer):
    """A client that connects and leaves (a readiness probe) is normal here, not an error."""

    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Linx demo container")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    args = parser.parse_args(argv)
    serve(QuietServer((args.host, args.port), DemoHandler))


def serve(server: ThreadingHTTPServer) -> None:
    """Announce ``LISTENING <port>``, serve until SIGTERM or Ctrl-C, then exit 0."""
    # serve_forever runs in the main thread; SIGTERM asks it to stop from a helper thread
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    print(f"LISTENING {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    sys.exit(0)


if __name__ == "__main__":
    main()
