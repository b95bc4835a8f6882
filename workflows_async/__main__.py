"""``python -m workflows_async``: the same as the ``workflows-async`` command."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
