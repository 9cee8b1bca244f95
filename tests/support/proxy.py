"""A TCP proxy that holds every new connection for a while: a slow or unreachable dependency."""

from __future__ import annotations

import socket
import socketserver
import threading
import time


class _Relay(socketserver.BaseRequestHandler):
    server: DelayProxy

    def handle(self) -> None:
        time.sleep(self.server.delay)
        with socket.create_connection(("127.0.0.1", self.server.target_port)) as upstream:
            relay = (upstream, self.request, self.server.thawed)
            pump = threading.Thread(target=_copy, args=relay, daemon=True)
            pump.start()
            _copy(self.request, upstream, self.server.thawed)
            pump.join()


def _copy(source: socket.socket, target: socket.socket, thawed: threading.Event) -> None:
    try:
        while data := source.recv(65536):
            thawed.wait()
            target.sendall(data)
        target.shutdown(socket.SHUT_WR)
    except OSError:
        return


class DelayProxy(socketserver.ThreadingTCPServer):
    """Relays 127.0.0.1:port to ``target_port`` after ``delay`` seconds per connection.

    ``freeze()`` stops relaying on every connection, open ones too (a dependency that hangs:
    SIGSTOP without touching the shared server); ``thaw()`` resumes it.
    """

    daemon_threads = True

    def __init__(self, target_port: int, delay: float) -> None:
        super().__init__(("127.0.0.1", 0), _Relay)
        self.target_port = target_port
        self.delay = delay
        self.thawed = threading.Event()
        self.thawed.set()
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def freeze(self) -> None:
        self.thawed.clear()

    def thaw(self) -> None:
        self.thawed.set()

    def stop(self) -> None:
        self.thaw()
        self.shutdown()
        self.server_close()
