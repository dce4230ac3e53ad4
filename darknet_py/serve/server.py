"""Darknet's HTTP streams on the standard library: ``-mjpeg_port`` and ``-json_port``.

:class:`MjpegServer` serves JPEG updates as ``multipart/x-mixed-replace`` (what a browser shows as
a live image, and what OpenCV, ffmpeg or VLC read as a video) plus a small HTML page and a JSON
``/status``; :class:`JsonServer` serves Darknet's JSON stream: ``[`` then one object per frame
separated by ``, `` (and ``]`` when the server closes, so a finished stream is one JSON array).

Each server is a :class:`http.server.ThreadingHTTPServer` running in a daemon thread; every client
has its own handler thread and a bounded queue (:mod:`.broadcast`), so a slow or vanished client
never stalls the producer. Servers bind to 127.0.0.1 unless told another address (Darknet binds
every interface). A port that cannot be bound is a one-line :class:`ServeError`.

Hostile clients (any local process can connect):

* a client that resets or vanishes mid-request costs nothing on the terminal (the standard
  library prints a whole traceback per client); other errors of a handler are one short line, at
  most one per :data:`ERROR_LINE_EVERY` seconds;
* at most :data:`MAX_CONNECTIONS` connections are served at a time (one thread each; a client
  that sends its request slowly keeps one for :data:`WRITE_TIMEOUT` seconds at most); further
  connections are closed at once;
* the ``Host`` header must name the server as the bound address does (an IP literal, or
  ``localhost`` / this machine's name where those reach it): a web page whose domain was
  re-bound to 127.0.0.1 (DNS rebinding) is refused with 403 (deliberate difference: Darknet
  serves any request);
* the ``Server`` header says ``darknet-py``, not the Python version.
"""
from __future__ import annotations

import json
import select
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Dict, Optional, Set

from ..errors import DarknetError, UsageError
from .broadcast import MAX_CLIENTS, QUEUE_LEN, Broadcaster, ClientQueue

DEFAULT_HOST = "127.0.0.1"
#: a client that accepts nothing for this long is dropped (its handler thread only)
WRITE_TIMEOUT = 10.0
#: how often a waiting handler looks at the stop flag
POLL = 0.25
#: JSON frames are small: a client may fall this many behind before it skips frames
JSON_QUEUE_LEN = 64
BOUNDARY = "mjpegstream"
#: connections served at once (stream clients are further bounded by ``max_clients``)
MAX_CONNECTIONS = 32
#: unexpected handler errors print one line at most this often
ERROR_LINE_EVERY = 10.0
_NO_CACHE = (("Cache-Control", "no-cache, private"), ("Pragma", "no-cache"), ("Expires", "0"))


class ServeError(DarknetError):
    """A stream server that cannot start (port in use, address not on this machine...)."""
    kind = "server error"


def check_port(port: Optional[int], flag: str) -> int:
    """0/None = off (as in Darknet); otherwise a TCP port number."""
    if not port:
        return 0
    if not 0 < port < 65536:
        raise UsageError(f"-{flag} must be a TCP port (1..65535), got {port}")
    return int(port)


class _Http(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True  # Linux: a port in TIME_WAIT is reusable, a listening one is not
    request_queue_size = 16
    #: set by StreamServer.start: what the terminal sees of handler errors
    sender = "HTTP_sender"

    def server_bind(self) -> None:
        super().server_bind()
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._last_error_line = 0.0
        self._errors_unsaid = 0

    def process_request(self, request, client_address) -> None:
        # one thread per connection, but never more than MAX_CONNECTIONS: a flood of clients
        # that connect and wait is closed at the door instead of piling up threads
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request, client_address) -> None:
        """socketserver prints a full traceback per failed client; a client resetting or
        vanishing is normal and silent, anything else one line, rate-limited."""
        import time
        err = sys.exc_info()[1]
        if isinstance(err, OSError):          # reset, broken pipe, timeout
            return
        now = time.monotonic()
        if now - self._last_error_line < ERROR_LINE_EVERY:
            self._errors_unsaid += 1
            return
        more = f" ({self._errors_unsaid} more since the last line)" if self._errors_unsaid else ""
        self._last_error_line, self._errors_unsaid = now, 0
        text = str(err).strip().splitlines()[0] if str(err).strip() else ""
        print(f"{self.sender}: error serving {client_address[0]}: {type(err).__name__}"
              f"{': ' + text if text else ''}{more}", file=sys.stderr)


class _Http6(_Http):
    address_family = socket.AF_INET6


class StreamServer:
    """One listening port served from a background thread; subclasses add the routes."""

    what = "HTTP"
    sender = "HTTP_sender"  # Darknet's stderr name, "MJPG_sender: new client ..."

    def __init__(self, port: int, host: str = DEFAULT_HOST, max_clients: int = MAX_CLIENTS,
                 queue_len: int = QUEUE_LEN, flag: str = "port"):
        self.host = host or DEFAULT_HOST
        self.requested_port = int(port)
        self.max_clients = max_clients
        self.queue_len = queue_len
        self.flag = flag
        self.stopping = threading.Event()
        self._httpd: Optional[_Http] = None
        self._thread: Optional[threading.Thread] = None
        self._conns: Set[socket.socket] = set()
        self._conns_lock = threading.Lock()

    # ------------------------------------------------------------------ life cycle
    @property
    def port(self) -> int:
        return self._httpd.server_address[1] if self._httpd else self.requested_port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def start(self, announce: bool = True) -> "StreamServer":
        handler = type("Handler", (_Handler,), {"owner": self})
        self.allowed_hosts = _allowed_hosts(self.host)
        try:
            cls = _Http6 if ":" in self.host else _Http
            self._httpd = cls((self.host, self.requested_port), handler)
            self._httpd.sender = self.sender
        except OSError as e:
            reason = e.strerror or str(e)
            raise ServeError(f"cannot serve the {self.what} stream on {self.host}:"
                             f"{self.requested_port}: {reason} (choose another -{self.flag})",
                             value=self.requested_port) from None
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(POLL,),
                                        name=f"darknet-py {self.what} :{self.port}", daemon=True)
        self._thread.start()
        if announce:
            print(f"{self.what} stream: {self.url}{self.describe()}", file=sys.stderr)
            sys.stderr.flush()
        return self

    def describe(self) -> str:
        return ""

    def close(self, timeout: float = 5.0) -> None:
        """Stop accepting, end every client's stream, and join the server thread."""
        if self._httpd is None or self.stopping.is_set():
            return
        self.stopping.set()
        self._close_broadcasts()
        self._httpd.shutdown()
        with self._conns_lock:
            conns = list(self._conns)
        for c in conns:  # unblock handlers stuck writing to a client that reads nothing
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout)

    def _close_broadcasts(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> "StreamServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ requests
    def route(self, path: str, accept: str) -> Optional[Callable[["_Handler"], None]]:
        raise NotImplementedError

    def stream(self, h: "_Handler", b: Broadcaster, content_type: str, head: bytes,
               part: Callable[[bytes, int], bytes], tail: bytes = b"") -> None:
        """Send ``head``, then ``part(update, n)`` for each update of ``b`` until the server
        stops (then ``tail``) or the client goes away."""
        q: Optional[ClientQueue] = b.register()
        if q is None:
            h.send_error(503, f"too many clients (at most {b.max_clients})")
            return
        with self._conns_lock:
            self._conns.add(h.connection)
        try:
            h.send_response(200)
            h.send_header("Content-Type", content_type)
            h.send_header("Connection", "close")
            for k, v in _NO_CACHE:
                h.send_header(k, v)
            h.end_headers()
            h.wfile.write(head)
            print(f"{self.sender}: new client {h.client_address[0]}:{h.client_address[1]}",
                  file=sys.stderr)
            n = 0
            while not self.stopping.is_set():
                item = q.get(POLL)
                if item is None:
                    if q.closed or _peer_closed(h.connection):
                        break
                    continue
                h.wfile.write(part(item, n))
                n += 1
            if tail:
                h.wfile.write(tail)
        except OSError:  # reset, broken pipe, or WRITE_TIMEOUT on a client that stopped reading
            pass
        finally:
            b.unregister(q)
            with self._conns_lock:
                self._conns.discard(h.connection)

    @staticmethod
    def reply(h: "_Handler", body: bytes, content_type: str) -> None:
        h.send_response(200)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(body)))
        for k, v in _NO_CACHE:
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(body)


class _Handler(BaseHTTPRequestHandler):
    owner: StreamServer
    protocol_version = "HTTP/1.0"
    server_version = "darknet-py"
    sys_version = ""
    timeout = WRITE_TIMEOUT

    def version_string(self) -> str:
        return self.server_version          # not "Python/3.x": nothing to fingerprint

    def do_GET(self):  # noqa: N802 (http.server's name)
        if not _host_allowed(self.headers.get("Host"), self.owner.allowed_hosts,
                             self.owner.port):
            self.send_error(403, "Host header does not name this server")
            return
        path = self.path.split("?", 1)[0]
        fn = self.owner.route(path, self.headers.get("Accept", ""))
        if fn is None:
            self.send_error(404)
            return
        fn(self)

    def log_message(self, format, *args):  # no access log on stderr
        pass


# ---------------------------------------------------------------------------------- JSON
class JsonServer(StreamServer):
    """Darknet's ``-json_port``: any GET gets ``[`` then one JSON object per update."""

    what = "JSON"
    sender = "JSON_sender"

    def __init__(self, port: int, host: str = DEFAULT_HOST, **kw):
        kw.setdefault("flag", "json_port")
        kw.setdefault("queue_len", JSON_QUEUE_LEN)
        super().__init__(port, host, **kw)
        self.objects = Broadcaster(self.max_clients, self.queue_len)

    def describe(self) -> str:
        return " (application/json: '[' then one object per frame)"

    def publish(self, text: str) -> None:
        self.objects.publish(text.encode("utf-8"))

    def route(self, path, accept):
        return lambda h: self.stream(h, self.objects, "application/json", b"[\n",
                                     lambda item, n: item if n == 0 else b", \n" + item, b"\n]\n")

    def _close_broadcasts(self):
        self.objects.close_all()


# ---------------------------------------------------------------------------------- MJPEG
class MjpegServer(StreamServer):
    """``-mjpeg_port``: ``/`` a page (to browsers) or the stream (to video readers),
    ``/stream.mjpg`` the stream, ``/status`` the producer's latest numbers as JSON, and
    ``/plots/NAME.mjpg`` further image streams (:meth:`publish_jpeg` with a name)."""

    what = "MJPEG"
    sender = "MJPG_sender"

    def __init__(self, port: int, host: str = DEFAULT_HOST, title: str = "darknet-py",
                 quality: int = 80, **kw):
        kw.setdefault("flag", "mjpeg_port")
        super().__init__(port, host, **kw)
        self.title = title
        self.quality = int(quality)
        self.streams: Dict[str, Broadcaster] = {"": Broadcaster(self.max_clients,
                                                                self.queue_len)}
        self._status: Dict[str, object] = {}
        self._lock = threading.Lock()

    def describe(self) -> str:
        return f" (page; the stream alone: {self.url}stream.mjpg)"

    # -------------------------------------------------------------- producer side
    def publish_image(self, bgr, name: str = "") -> None:
        """Send a BGR uint8 image (left unchanged afterwards), JPEG-encoded only when someone
        watches: now if a client is connected, else when one connects before the next image."""
        self._broadcaster(name).publish_lazy(bgr, self._encode)

    def publish_jpeg(self, jpeg: bytes, name: str = "") -> None:
        self._broadcaster(name).publish(jpeg)

    def _encode(self, bgr) -> Optional[bytes]:
        import cv2
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        return buf.tobytes() if ok else None

    def _broadcaster(self, name: str) -> Broadcaster:
        with self._lock:
            b = self.streams.get(name)
            if b is None:
                b = self.streams[name] = Broadcaster(self.max_clients, self.queue_len)
        return b

    def set_status(self, **values) -> None:
        with self._lock:
            self._status.update(values)

    def status(self) -> Dict[str, object]:
        with self._lock:
            return dict(self._status)

    # -------------------------------------------------------------- requests
    def route(self, path, accept):
        if path == "/" and "text/html" in accept:
            return self._page
        browser = _is_browser(accept)
        if path in ("/", "/stream.mjpg"):
            return lambda h: self._stream_named(h, "", browser)
        if path == "/status":
            return lambda h: self.reply(h, json.dumps(self.status()).encode(),
                                        "application/json")
        if path.startswith("/plots/") and path.endswith(".mjpg"):
            name = path[len("/plots/"):-len(".mjpg")]
            with self._lock:
                if name not in self.streams:
                    return None
            return lambda h: self._stream_named(h, name, browser)
        return None

    def _stream_named(self, h, name: str, browser: bool = False) -> None:
        with self._lock:
            b = self.streams[name]
        if browser:
            head, part = _BOUNDARY_LINE + _BROWSER_PART_HEAD, _browser_jpeg_part
        else:
            head, part = _BOUNDARY_LINE, _jpeg_part
        self.stream(h, b, f"multipart/x-mixed-replace; boundary={BOUNDARY}", head, part)

    def _page(self, h) -> None:
        with self._lock:
            plots = sorted(n for n in self.streams if n)
        imgs = "".join(f'<h2>{_esc(n)}</h2><img src="/plots/{_esc(n)}.mjpg" alt="{_esc(n)}">'
                       for n in plots)
        body = _PAGE.replace("{title}", _esc(self.title)).replace("{plots}", imgs)
        self.reply(h, body.encode("utf-8"), "text/html; charset=utf-8")

    def _close_broadcasts(self):
        with self._lock:
            streams = list(self.streams.values())
        for b in streams:
            b.close_all()


_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def _allowed_hosts(bound: str):
    """The names a ``Host`` header may give for a server bound to ``bound``: ``None`` means any
    IP literal, ``localhost`` and this machine's names (a wildcard address), else a set."""
    import ipaddress
    try:
        ip = ipaddress.ip_address(bound)
    except ValueError:
        return {bound.lower()}
    if ip.is_unspecified:
        return None
    names = {str(ip)}
    if ip.is_loopback:
        names |= _LOOPBACK_NAMES
    else:
        names |= _machine_names()
    return names


def _machine_names():
    names = set()
    for get in (socket.gethostname, socket.getfqdn):
        try:
            names.add(get().lower())
        except OSError:
            pass
    return names


def _host_allowed(header: Optional[str], allowed, port: int) -> bool:
    """Whether a request's ``Host`` names this server (DNS rebinding: a browser sends the
    attacker's domain name there). No ``Host`` at all (HTTP/1.0 tools) is accepted: a browser
    always sends one."""
    import ipaddress
    if header is None:
        return True
    host = header.strip().lower()
    if host.startswith("["):                           # [v6]:port
        name, _, rest = host[1:].partition("]")
        given_port = rest[1:] if rest.startswith(":") else ""
    elif host.count(":") == 1:
        name, given_port = host.split(":")
    else:
        name, given_port = host, ""
    if given_port and given_port != str(port):
        return False
    if allowed is not None:
        return name in allowed
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return name == "localhost" or name in _machine_names()


def _peer_closed(sock: socket.socket) -> bool:
    """True when the client has closed its side (readable with nothing to read)."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):
        return True


_BOUNDARY_LINE = f"--{BOUNDARY}\r\n".encode("ascii")
_BROWSER_PART_HEAD = b"Content-Type: image/jpeg\r\n\r\n"


def _is_browser(accept: str) -> bool:
    """A browser page or <img> asks for HTML or images; OpenCV, ffmpeg, VLC and curl send
    ``*/*`` (or nothing)."""
    return "text/html" in accept or "image/" in accept


def _jpeg_part(jpeg: bytes, n: int) -> bytes:
    """For video readers: Darknet's part (headers with Content-Length, the JPEG) and the
    boundary after it, so a reader that splits on boundaries has the frame at once (the
    stream's head is the first boundary)."""
    return (f"Content-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
            ).encode("ascii") + jpeg + b"\r\n" + _BOUNDARY_LINE


def _browser_jpeg_part(jpeg: bytes, n: int) -> bytes:
    """For browsers: the JPEG, then the boundary *and the next part's headers*. Chromium shows a
    part only once the next part's headers are parsed, and a training chart's next frame may be
    minutes away; those headers cannot carry the next JPEG's length, which browsers do not
    need (the stream's head is the first boundary and part headers)."""
    return jpeg + b"\r\n" + _BOUNDARY_LINE + _BROWSER_PART_HEAD


def _esc(text: str) -> str:
    return (str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;"))


_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>body{font-family:sans-serif;margin:1em}img{max-width:100%}pre{font-size:1.1em}</style>
</head><body><h1>{title}</h1>
<pre id="status"></pre>
<img id="stream" src="/stream.mjpg" alt="live stream">
{plots}
<script>
async function poll() {
  try {
    const r = await fetch("/status", {cache: "no-store"});
    const s = await r.json();
    document.getElementById("status").textContent =
      Object.entries(s).map(([k, v]) => k + ": " + v).join("\\n");
  } catch (e) {
    document.getElementById("status").textContent = "(server gone)";
    return;
  }
  setTimeout(poll, 2000);
}
poll();
</script></body></html>
"""
