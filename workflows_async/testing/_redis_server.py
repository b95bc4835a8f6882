"""A throwaway ``redis-server`` process on a free localhost port, for tests of ``RedisBus``.

Invariants: the server binds 127.0.0.1 only and writes nothing to disk (no RDB, no AOF);
``start()`` returns only once *this* server answers (its ``INFO`` names our child's pid, so
another server that happens to hold the port is never taken for it); ``restart()`` keeps the
port, so clients that knew the old server find the new one at the same URL.

redis-server cannot be told to bind port 0 and report the port, so a port is picked first and
may be taken by another process before the server binds it: when the port was picked here and
the first start finds it taken, another port is picked (a few times); once a server has run on
a port, it stays.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["RedisServer", "RedisServerError"]

_BINARY_ENV = "REDIS_SERVER"  # set to the redis-server binary when it is not on PATH


class RedisServerError(RuntimeError):
    """redis-server is missing, did not start, or did not answer in time."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _find_binary() -> str:
    configured = os.environ.get(_BINARY_ENV)
    found = configured or shutil.which("redis-server")
    if found is None and Path("/usr/bin/redis-server").exists():
        found = "/usr/bin/redis-server"
    if found is None:
        raise RedisServerError(
            f"redis-server not found: install it (apt-get install redis-server) or set"
            f" {_BINARY_ENV} to its path"
        )
    return found


_PORT_TRIES = 5  # ports picked for a first start before giving up


class _PortTaken(RedisServerError):
    """The picked port was bound by another process before redis-server could bind it."""


def _answers_as(port: int, pid: int) -> bool:
    """True when the server on ``port`` answers and is the process ``pid``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
            conn.sendall(b"INFO server\r\n")
            reply = b""
            while b"process_id:" not in reply or not reply.endswith(b"\r\n"):
                chunk = conn.recv(4096)
                if not chunk or len(reply) > 1 << 16:
                    return False
                reply += chunk
    except OSError:
        return False
    return f"process_id:{pid}\r\n".encode() in reply


class RedisServer:
    """One redis-server child process; ``url`` stays the same across restarts."""

    def __init__(
        self,
        *,
        port: int | None = None,
        start_timeout: float = 10.0,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.port = port or _free_port()
        self._may_move = port is None  # a port picked here, never served on yet
        self.start_timeout = start_timeout
        self.extra_args = tuple(extra_args)
        self._binary = _find_binary()
        self._process: subprocess.Popen[bytes] | None = None
        self._workdir: str | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Launch the server and wait until it answers."""
        if self.running:
            return
        for _ in range(_PORT_TRIES - 1 if self._may_move else 0):
            try:
                self._launch()
            except _PortTaken:
                self.port = _free_port()
                continue
            break
        else:
            self._launch()
        self._may_move = False  # served on: restarts keep this port

    def _launch(self) -> None:
        self._workdir = self._workdir or tempfile.mkdtemp(prefix="redis-test-")
        log = Path(self._workdir) / "redis.log"
        command = [
            self._binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--dir", self._workdir,
            "--logfile", str(log),
            *self.extra_args,
        ]  # fmt: skip
        self._process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + self.start_timeout
        while not _answers_as(self.port, self._process.pid):
            code = self._process.poll()
            if code is not None:
                stderr = self._process.stderr.read() if self._process.stderr else b""
                self._process = None
                why = f"{stderr.decode(errors='replace').strip()} {_tail(log)}"
                error = _PortTaken if "already in use" in why else RedisServerError
                raise error(f"redis-server exited with code {code} on port {self.port}: {why}")
            if time.monotonic() > deadline:
                self.stop()
                raise RedisServerError(
                    f"redis-server did not answer PING on port {self.port} within"
                    f" {self.start_timeout:.0f}s {_tail(log)}"
                )
            time.sleep(0.01)

    def stop(self) -> None:
        """Kill the server (like a crash: no shutdown save) and wait for it to exit."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        if process.stderr is not None:
            process.stderr.close()

    def restart(self) -> None:
        """Stop and start again on the same port (all data is gone: nothing is saved)."""
        self.stop()
        self.start()

    def cleanup(self) -> None:
        """Stop the server and remove its working directory."""
        self.stop()
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.cleanup()

    def __repr__(self) -> str:
        return f"RedisServer(url={self.url!r}, running={self.running})"


def _tail(log: Path, lines: int = 5) -> str:
    try:
        text = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return "(log: " + " | ".join(text[-lines:]) + ")" if text else ""
