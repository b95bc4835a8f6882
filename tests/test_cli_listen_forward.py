"""``listen`` without credentials and ``listen --forward-to`` (issue 12): each verified event's
raw body is relayed to a local app with a "verified" header and never the JWS; remote targets
need an explicit flag; a relay that fails is reported and the listener goes on."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from fake_api import closed_port
from test_cli import FAST, Child, SimThread, api, cli, no_workflows_env  # noqa: F401

from workflows_async.cli.forward import VERIFIED_HEADER, Forwarder
from workflows_async.events import parse_event


@pytest.fixture
def sim() -> Iterator[SimThread]:
    server = SimThread()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def target() -> Iterator[tuple[str, list[tuple[dict[str, str], bytes]]]]:
    received: list[tuple[dict[str, str], bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            received.append((dict(self.headers.items()), body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/local/webhooks", received
    finally:
        server.shutdown()
        server.server_close()


def test_listen_without_credentials_forwards_verified_bodies(
    capsys: pytest.CaptureFixture[str],
    sim: SimThread,
    target: tuple[str, list[tuple[dict[str, str], bytes]]],
) -> None:
    url, received = target
    # No --api-key/--token: the signing-key endpoint needs none.
    child = Child("listen", "--port", "0", "--base-url", sim.base_url, "--insecure-http",
                  "--forward-to", url)  # fmt: skip
    hook = ""
    try:
        status = child.line(child.stderr)
        assert "listening on http://127.0.0.1:" in status
        hook = status.split()[-4]
        sim.call(lambda: sim.sim.add_webhook_url(hook))
        code, out, _ = cli(capsys, "run", *api(sim), *FAST, "--definition", "kyc-basic")
        assert code == 0
        workflow_id = json.loads(out)["workflowId"]
        assert json.loads(child.line(child.stdout, timeout=20))["workflowId"] == workflow_id
        line = child.line(child.stderr, timeout=20)
        assert f"forwarded {workflow_id} COMPLETED -> 204" in line
    finally:
        if hook:
            sim.call(lambda: sim.sim.remove_webhook_url(hook))
        code, err = child.stop()
    assert code == 0, err
    assert "Traceback" not in err
    headers, body = received[0]
    assert parse_event(body).workflow_id == workflow_id  # the raw body, as signed
    assert headers[VERIFIED_HEADER] == "true"
    assert not any(name.lower() == "jws-signature" for name in headers)


def test_forwarding_elsewhere_needs_an_explicit_flag(capsys: pytest.CaptureFixture[str]) -> None:
    base = ["listen", "--base-url", "https://api.example.test"]
    code, _, err = cli(capsys, *base, "--forward-to", "https://hooks.example.test/in")
    assert code == 2
    assert "--forward-remote" in err
    code, _, err = cli(capsys, *base, "--forward-to", "ftp://127.0.0.1/x")
    assert code == 2


async def test_a_failed_relay_is_reported_never_raised(capsys: pytest.CaptureFixture[str]) -> None:
    event = parse_event(b'{"workflowId": "wf-9", "status": "COMPLETED"}')
    closed = f"http://127.0.0.1:{closed_port()}/nothing-listens-here"
    async with Forwarder(closed, verified=True, timeout=5) as forwarder:
        await forwarder.forward(event)
    assert (forwarder.sent, forwarder.failed) == (0, 1)
    assert "forward wf-9 to" in capsys.readouterr().err
