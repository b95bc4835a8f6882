"""The pieces of the ``workflows-async`` command; ``workflows_async.cli`` holds ``main``.

Invariant: nothing in this package prints a secret or personal data; every command returns an
exit code instead of calling ``sys.exit``, so ``main`` stays the only place that maps errors.
"""
