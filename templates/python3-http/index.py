"""HTTP-mode entry point: a long-running server built on the standard library only.

fwatchdog starts this once and proxies every request to it. It listens where
fwatchdog proxies to (the `upstream_url` setting, which fwatchdog passes on in the
environment) and calls function/handler.py's handle(event, context) per request.

handle() may return:
  - a dict: {"statusCode": 200, "body": ..., "headers": {...}}; a dict or list body is
    sent as JSON;
  - a str or bytes: sent with status 200;
  - None: an empty 200.
An exception becomes a 500 with the error message.
"""

import json
import os
import sys
import traceback
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from function import handler


class Event:
    def __init__(self, request, body):
        url = urllib.parse.urlsplit(request.path)
        self.body = body
        self.headers = request.headers
        self.method = request.command
        self.path = url.path
        self.query = urllib.parse.parse_qs(url.query)


class Context:
    def __init__(self):
        self.hostname = os.getenv("HOSTNAME", "localhost")


def read_body(request):
    """The request body, whether sent with a Content-Length or chunked."""
    length = request.headers.get("Content-Length")
    if length is not None:
        return request.rfile.read(int(length))
    if "chunked" in request.headers.get("Transfer-Encoding", "").lower():
        chunks = []
        while True:
            size = int(request.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                # Trailers, up to the empty line.
                while request.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            chunks.append(request.rfile.read(size))
            request.rfile.readline()
    return b""


def to_response(result):
    """(status, headers, body bytes) from what handle() returned."""
    if result is None:
        return 200, {}, b""
    if isinstance(result, (str, bytes)):
        return 200, {}, result.encode() if isinstance(result, str) else result
    status = int(result.get("statusCode", 200))
    headers = dict(result.get("headers") or {})
    body = result.get("body", b"")
    if isinstance(body, (dict, list)):
        body = json.dumps(body)
        headers.setdefault("Content-Type", "application/json")
    if body is None:
        body = b""
    if isinstance(body, str):
        body = body.encode()
    return status, headers, body


class Handler(BaseHTTPRequestHandler):
    # Keep-alive, so fwatchdog can reuse its connections to us.
    protocol_version = "HTTP/1.1"

    def handle_any(self):
        body = read_body(self)
        try:
            status, headers, payload = to_response(handler.handle(Event(self, body), Context()))
        except Exception as e:  # the function's bug: report it, keep serving
            traceback.print_exc()
            status, headers, payload = 500, {"Content-Type": "text/plain"}, (str(e) + "\n").encode()
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, str(value))
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = handle_any

    def log_message(self, fmt, *args):
        # fwatchdog already logs every request.
        pass


def listen_address():
    # Same precedence as fwatchdog: the last alias listed wins.
    url = urllib.parse.urlsplit(
        os.getenv("http_upstream_url") or os.getenv("upstream_url") or "http://127.0.0.1:5000"
    )
    return url.hostname or "127.0.0.1", url.port or 5000


def main():
    address = listen_address()
    server = ThreadingHTTPServer(address, Handler)
    server.daemon_threads = True
    print("python3-http: listening on %s:%d" % address, file=sys.stderr, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
