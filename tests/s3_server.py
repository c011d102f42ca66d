"""A local S3 server for the object-store tests, and a network link to it that can fail.

:class:`S3Server` runs moto's S3 in server mode in this process, bound to 127.0.0.1 on a
free port, behind a :class:`Link`: a loopback TCP relay a test can cut (open connections
are shut, new ones refused) or leave hanging (nothing is answered any more) and then
restore, like a network that goes away and comes back while the server and its objects
stay. :meth:`S3Server.environment` is what a user sets to point s3fs at an endpoint:
``AWS_ENDPOINT_URL_S3`` and credentials (dummy ones here). Nothing but 127.0.0.1 is ever
contacted.

Without moto or s3fs, :func:`require_s3` skips the test, unless
``$STEPSTORE_REQUIRE_SERVICES`` is set: then it fails and says what is missing.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

#: The dummy credentials and region the server accepts.
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
REGION = "us-east-1"


def require_s3() -> None:
    """Skip the test when moto's server or s3fs is not installed (fail it when services
    are required)."""
    missing = [
        name
        for name in ("moto", "flask", "s3fs", "boto3")
        if importlib.util.find_spec(name) is None
    ]
    if not missing:
        return
    problem = f"the S3 tests need {', '.join(missing)}: pip install 'moto[server]' s3fs"
    if os.environ.get("STEPSTORE_REQUIRE_SERVICES"):
        pytest.fail(f"{problem} ($STEPSTORE_REQUIRE_SERVICES is set)", pytrace=False)
    pytest.skip(problem)


def _shut(sock: socket.socket) -> None:
    """Shut a socket down (waking a thread blocked on it) and close it."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


class Link:
    """A loopback TCP relay to ``upstream`` that can be cut, or left hanging, and restored."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self._upstream = upstream
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._relaying = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.port = 0
        self.restore()

    def restore(self) -> None:
        """Relay new connections (on the same port after a cut)."""
        self._halt()
        self._relaying.set()
        self._listen(relay=True)

    def cut(self) -> None:
        """Shut every open connection and refuse new ones, as when the server is gone."""
        self._halt()

    def hang(self) -> None:
        """Answer nothing any more, on open connections and on new ones (which are
        accepted), as when the network drops every packet."""
        self._relaying.clear()
        self._stop_listening()
        self._listen(relay=False)

    @contextlib.contextmanager
    def down(self, hang: bool = False) -> Iterator[None]:
        """The link cut (or hanging) for the duration of the block."""
        if hang:
            self.hang()
        else:
            self.cut()
        try:
            yield
        finally:
            self.restore()

    def _listen(self, relay: bool) -> None:
        listener = socket.create_server(("127.0.0.1", self.port))
        listener.settimeout(0.1)
        self.port = listener.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._serve, args=(listener, self._stop, relay), name="s3-link", daemon=True
        )
        self._thread.start()

    def _stop_listening(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None

    def _halt(self) -> None:
        """Stop listening and shut every open connection."""
        self._stop_listening()
        with self._lock:
            dropped, self._open = self._open, set()
        for sock in dropped:
            _shut(sock)

    def _serve(self, listener: socket.socket, stop: threading.Event, relay: bool) -> None:
        with listener:
            while not stop.is_set():
                try:
                    client, _ = listener.accept()
                except TimeoutError:
                    continue
                if not relay:
                    with self._lock:
                        self._open.add(client)  # held open, never answered
                    continue
                try:
                    server = socket.create_connection(self._upstream)
                except OSError:
                    _shut(client)
                    continue
                with self._lock:
                    self._open.update((client, server))
                for source, sink in ((client, server), (server, client)):
                    pump = threading.Thread(target=self._pump, args=(source, sink), daemon=True)
                    pump.start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(1 << 16):
                if self._relaying.is_set():  # else swallowed, like a dead network
                    sink.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._open.difference_update((source, sink))
            _shut(source)
            _shut(sink)


class S3Server:
    """moto's S3 on 127.0.0.1, reached by s3fs through a :class:`Link`; ``client`` is a
    boto3 client that talks to moto directly (it never goes through the link)."""

    def __init__(self) -> None:
        import boto3
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request
        self._moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._moto.start()
        host, port = self._moto.get_host_and_port()
        self.link = Link((host, port))
        self.endpoint = f"http://127.0.0.1:{self.link.port}"
        self.client: Any = boto3.client(
            "s3", endpoint_url=f"http://{host}:{port}", region_name=REGION, **CREDENTIALS
        )

    def environment(self) -> dict[str, str]:
        """The environment that points s3fs (botocore) at this server and nowhere else."""
        return {
            "AWS_ENDPOINT_URL_S3": self.endpoint,
            "AWS_ACCESS_KEY_ID": CREDENTIALS["aws_access_key_id"],
            "AWS_SECRET_ACCESS_KEY": CREDENTIALS["aws_secret_access_key"],
            "AWS_DEFAULT_REGION": REGION,
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
            "NO_PROXY": "127.0.0.1",
        }

    def bucket(self) -> Bucket:
        """A new, empty bucket."""
        name = f"stepstore-{uuid.uuid4().hex[:12]}"
        self.client.create_bucket(Bucket=name)
        return Bucket(name, self.client)

    def stop(self) -> None:
        """Stop the relay and the server."""
        self.link.cut()
        self._moto.stop()


class Bucket:
    """One bucket, read and written straight through moto (never through the link)."""

    def __init__(self, name: str, client: Any) -> None:
        self.name = name
        self._client = client

    def url(self, prefix: str = "arrays") -> str:
        """``s3://BUCKET/PREFIX``."""
        return f"s3://{self.name}/{prefix}"

    def keys(self, prefix: str = "") -> list[str]:
        """Keys of the objects under ``prefix``, sorted."""
        pages = self._client.get_paginator("list_objects_v2").paginate(
            Bucket=self.name, Prefix=prefix
        )
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))

    def get(self, key: str) -> bytes:
        """An object's bytes."""
        body: bytes = self._client.get_object(Bucket=self.name, Key=key)["Body"].read()
        return body

    def put(self, key: str, data: bytes) -> None:
        """Replace an object's bytes."""
        self._client.put_object(Bucket=self.name, Key=key, Body=data)
