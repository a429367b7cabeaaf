"""A TCP proxy (in front of Redis, or an API) whose connections can go silent, as in a network
partition, or be cut.

Frozen connections stay open but nothing flows through them any more (what arrives is
dropped), so neither side sees an error; connections made afterwards flow again.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote


class _Link:
    def __init__(self, client: socket.socket, server: socket.socket) -> None:
        self.client = client
        self.server = server
        self.frozen = False

    def pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                if not self.frozen:
                    sink.sendall(data)
        except OSError:
            pass
        finally:
            self.close()

    def close(self) -> None:
        for sock in (self.client, self.server):
            try:
                sock.close()
            except OSError:
                pass


class FreezingProxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.links: list[_Link] = []
        self._lock = threading.Lock()

    def url(self, password: str) -> str:
        return f"redis://:{quote(password, safe='')}@127.0.0.1:{self.port}/0"

    @property
    def connections(self) -> int:
        with self._lock:
            return len(self.links)

    def freeze(self) -> None:
        """Every connection open now goes silent."""
        with self._lock:
            for link in self.links:
                link.frozen = True

    def cut(self) -> None:
        """Every connection open now is closed (a dropped connection); later ones flow."""
        with self._lock:
            links, self.links = self.links, []
        for link in links:
            for sock in (link.client, link.server):
                try:
                    sock.shutdown(socket.SHUT_RDWR)  # wakes a thread reading it; close alone may not
                except OSError:
                    pass
            link.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target_port))
            link = _Link(client, server)
            with self._lock:
                self.links.append(link)
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=link.pump, args=(source, sink), daemon=True).start()

    def close(self) -> None:
        self._listener.close()
        with self._lock:
            for link in self.links:
                link.close()


@contextmanager
def freezing_proxy(target_port: int) -> Iterator[FreezingProxy]:
    proxy = FreezingProxy(target_port)
    threading.Thread(target=proxy._accept, daemon=True).start()
    try:
        yield proxy
    finally:
        proxy.close()
