"""A tiny app whose page uses ABSOLUTE paths (``/style.css``, ``/app.js``, ``/ws``, ``/secret``).

    python -m tests.browser.absolute_app --name victim --port 0

It only works where the app owns the whole origin, i.e. behind host routing (SPEC section 6);
under ``/linx/<service_id>/`` its assets would miss the prefix. The WebSocket echo and the
reply helpers are the demo container's (``deploy/demo_app.py``). Every request head is recorded
and listed, straight from the app (never through the proxy), at ``GET /__requests``.
Prints ``LISTENING <port>`` once ready.
"""

from __future__ import annotations

import argparse
import json
import secrets
import threading

from deploy.demo_app import DemoHandler, QuietServer, serve

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Absolute {name}</title>
<link rel="stylesheet" href="/style.css">
</head>
<body>
<h1>{name}</h1>
<p id="ws-status">WebSocket: connecting</p>
<script src="/app.js"></script>
</body>
</html>
"""

CSS = """#ws-status { border-left: 7px solid rgb(1, 2, 3); }
h1 { color: rgb(4, 5, 6); }
"""

JS = """(function () {
  "use strict";
  document.body.dataset.appJs = "ran";
  var status = document.getElementById("ws-status");
  var scheme = location.protocol === "https:" ? "wss:" : "ws:";
  var ws = new WebSocket(scheme + "//" + location.host + "/ws");
  ws.onopen = function () { ws.send("absolute hello"); };
  ws.onmessage = function (event) { status.textContent = "WebSocket echo: " + event.data; };
  ws.onerror = function () { status.textContent = "WebSocket error"; };
})();
"""


class AbsoluteHandler(DemoHandler):
    server_version = "LinxAbsolute/1.0"
    name = "app"
    secret = ""
    recorded: list[dict] = []
    lock = threading.Lock()

    def record(self) -> None:
        entry = {
            "method": self.command,
            "path": self.path,
            "host": self.headers.get("Host"),
            "origin": self.headers.get("Origin"),
            "cookie": self.headers.get("Cookie"),
            "sec_fetch_site": self.headers.get("Sec-Fetch-Site"),
        }
        with self.lock:
            self.recorded.append(entry)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/__requests":
            with self.lock:
                listing = list(self.recorded)
            self.reply(200, "application/json", json.dumps(listing))
            return
        self.record()
        if path == "/ws":
            self.websocket()
        elif path == "/":
            # the app's own session cookie, so a test can see whether a request carried cookies
            self.reply(
                200,
                "text/html; charset=utf-8",
                PAGE.format(name=self.name),
                cookie=f"app_session={self.name}-session; Path=/; HttpOnly; SameSite=Lax",
            )
        elif path == "/style.css":
            self.reply(200, "text/css; charset=utf-8", CSS)
        elif path == "/app.js":
            self.reply(200, "text/javascript; charset=utf-8", JS)
        elif path == "/secret":
            self.reply(200, "application/json", json.dumps({"secret": self.secret}))
        else:
            self.reply(404, "text/plain; charset=utf-8", "not found\n")

    def do_POST(self) -> None:
        self.record()
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.reply(200, "application/json", json.dumps({"secret": self.secret}))

    def reply(self, status: int, ctype: str, text: str, cookie: str | None = None) -> None:
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        if cookie:
            self.send_header("Set-Cookie", cookie)
        self.end_headers()
        if not self.head_only:
            self.wfile.write(body)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="absolute-path test app")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--name", default="app")
    parser.add_argument("--secret", default=None, help="what /secret answers (default: random)")
    args = parser.parse_args(argv)
    handler = type(
        "Handler",
        (AbsoluteHandler,),
        {
            "name": args.name,
            "secret": args.secret or f"{args.name}-secret-{secrets.token_hex(8)}",
            "recorded": [],
        },
    )
    serve(QuietServer((args.host, args.port), handler))


if __name__ == "__main__":
    main()
