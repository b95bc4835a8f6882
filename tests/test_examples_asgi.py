"""``examples/fastapi_app.py`` runs as written (a child process, localhost only): a FastAPI app
under uvicorn whose ``run_and_wait`` is finished by a webhook through the ASGI receiver."""

from __future__ import annotations

from test_examples import EXAMPLES, run


def test_the_fastapi_example_finishes_by_webhook() -> None:
    done = run(str(EXAMPLES / "fastapi_app.py"))
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "POST /verify -> 200" in done.stdout
    assert "'status': 'COMPLETED'" in done.stdout
    assert "'channel': 'webhook'" in done.stdout


def test_the_fastapi_example_has_an_async_main() -> None:
    text = (EXAMPLES / "fastapi_app.py").read_text()
    assert "async def main()" in text
    assert 'if __name__ == "__main__":' in text
