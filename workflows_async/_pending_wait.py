"""``Session.wait()``: one slotted object per wait that is at once the coroutine its caller
awaits, the wait's stats handle and its item in the shared deadline wheel.

While it is pending, the caller's task awaits the engine's future itself: no coroutine frame
of ours, no ``asyncio.timeout``, no second object per wait (a coroutine frame is ~320 bytes,
this whole object ~150). Starting the engine, and everything after the end is known (fetching
the result, the outcome, the stats), run as ordinary coroutines that this object drives.

Invariants: nothing is registered before the first ``send`` (a wait never awaited leaves
nothing behind); every way out of the pending phase (the future's result or error, a
cancellation, ``close``) first takes the wait out of the deadline wheel and the engine, then
runs :meth:`PendingWait._end`, which reports the wait exactly once and names the workflow in
every :class:`WorkflowsError` that leaves; once over, it cannot be awaited again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Generator
from typing import TYPE_CHECKING, Any, cast

from ._deadlines import WaitScope, check_wait_timeout, wait_timed_out
from ._ids import check_path_id
from ._metrics import WaitHandle
from .errors import WorkflowsError

if TYPE_CHECKING:
    from .models import WorkflowOutcome, WorkflowResult
    from .registry import Completion
    from .session import Session

__all__ = ["PendingWait"]

# Phases: not yet sent to; starting the engine (``_inner`` runs it); registered and pending
# (the caller's task awaits ``future``); ending (``_inner`` runs ``_end``); over.
_NEW, _STARTING, _PENDING, _ENDING, _OVER = range(5)


def _name(exc: WorkflowsError, workflow_id: str) -> None:
    if exc.workflow_id is None:
        exc.workflow_id = workflow_id  # the caller can resume with wait(workflow_id)


class PendingWait(WaitHandle, Coroutine[Any, Any, "WorkflowOutcome[WorkflowResult | None]"]):
    """What ``session.wait(workflow_id)`` returns: await it, or give it to
    ``asyncio.create_task``, ``gather`` or ``wait_for`` like any coroutine."""

    __slots__ = ("_deadline", "_inner", "_phase", "_raise", "_session", "_timeout", "future")

    def __init__(
        self, session: Session, workflow_id: str, timeout: float, raise_on_failure: bool
    ) -> None:
        WaitHandle.__init__(self, "wait", workflow_id, 0.0, None)
        self._session = session
        self._timeout = timeout
        self._raise = raise_on_failure
        self._phase = _NEW
        self._inner: Coroutine[Any, Any, Any] | None = None
        self._deadline = 0.0
        self.future: asyncio.Future[Completion] | None = None

    @property
    def __name__(self) -> str:  # what asyncio shows for it in a task's repr
        return "Session.wait"

    def __repr__(self) -> str:
        phase = ("new", "starting", "pending", "ending", "over")[self._phase]
        return f"<Session.wait({self.workflow_id!r}) {phase}>"

    # -- the coroutine protocol ------------------------------------------------------------

    def __await__(self) -> Generator[Any, None, WorkflowOutcome[WorkflowResult | None]]:
        # This object is its own iterator (send/throw/__next__), driven by the awaiting frame.
        return cast("Generator[Any, None, WorkflowOutcome[WorkflowResult | None]]", self)

    def send(self, value: Any = None) -> Any:
        phase = self._phase
        if phase == _PENDING:
            future = self.future
            if future is not None and not future.done():  # not the awaiting task waking up
                raise RuntimeError("this session.wait() is being awaited already")
            return self._leave(None)  # the future is done: the task woke us up
        if phase == _NEW:
            return self._begin()
        if phase == _OVER:
            raise RuntimeError("cannot reuse an already awaited session.wait()")
        return self._drive("send", value)

    __next__ = send  # what a Task calls on a coroutine that is not native: no call between

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        exc: BaseException = typ if isinstance(typ, BaseException) else (val or typ())
        phase = self._phase
        if phase == _PENDING:  # the future's error, or the task was cancelled
            return self._leave(exc)
        if phase in (_STARTING, _ENDING):
            return self._drive("throw", exc)
        self._phase = _OVER  # nothing was registered (or all was undone)
        raise exc

    def close(self) -> None:
        try:
            self.throw(GeneratorExit)
        except (GeneratorExit, StopIteration):
            return
        raise RuntimeError("session.wait() ignored GeneratorExit")

    # -- the phases ------------------------------------------------------------------------

    def _drive(self, method: str, arg: Any) -> Any:
        """Pass ``send``/``throw`` on to the coroutine of the current phase."""
        inner = self._inner
        assert inner is not None
        try:
            return getattr(inner, method)(arg)
        except StopIteration:
            if self._phase == _ENDING:
                self._phase = _OVER
                raise  # the outcome
        except BaseException:
            self._phase = _OVER
            raise
        self._inner = None  # the engine started
        return self._register()

    def _begin(self) -> Any:
        session, workflow_id = self._session, self.workflow_id
        self._phase = _OVER  # until registered: an error here ends it
        check_path_id(workflow_id, "workflow_id")
        self._timeout = check_wait_timeout(self._timeout)
        try:
            session._check_usable()
        except WorkflowsError as exc:  # e.g. closed: the error still names the workflow
            _name(exc, workflow_id)
            raise
        if session._waiting.ready:
            return self._register()
        self._phase, self._inner = _STARTING, self._start()
        return self._drive("send", None)

    async def _start(self) -> None:
        try:
            await self._session.start()
        except WorkflowsError as exc:
            _name(exc, self.workflow_id)
            raise

    def _register(self) -> Any:
        session = self._session
        session._recorder.waiting("wait", self.workflow_id, handle=self)
        try:
            future = session._waiting.enter(self.workflow_id, first_poll=0.0, started=self.started)
        except BaseException as exc:  # e.g. the Session closed while the engine started
            return self._leave(exc)
        self.future = future
        self._deadline = session._deadlines.add(self, self._timeout)
        self._phase = _PENDING
        if future.done():  # the early-event buffer had it
            return self._leave(None)
        future._asyncio_future_blocking = True  # what a Future's own __await__ yields with
        return future

    def _leave(self, error: BaseException | None) -> Any:
        """The pending phase is over (``error``: what was thrown in): forget the wait in the
        deadline wheel and the engine, then end it."""
        future = self.future
        self._phase = _ENDING
        if future is not None:
            self._session._deadlines.finished()
            self._session._waiting.leave(self.workflow_id, future)
        self._inner = self._end(error)
        return self._drive("send", None)

    async def _end(self, error: BaseException | None) -> WorkflowOutcome[WorkflowResult | None]:
        session, workflow_id = self._session, self.workflow_id
        with self:  # the wait's span is current; an error ends the wait as timed out etc.
            try:
                if error is not None:
                    raise error
                assert self.future is not None
                completion = self.future.result()
            except WorkflowsError as exc:
                _name(exc, workflow_id)
                raise
            async with WaitScope(self._timeout, workflow_id, at=self._deadline):
                return await session._outcome(completion, self.started, self._raise, self)

    # -- the deadline wheel's view ---------------------------------------------------------

    def over(self) -> bool:
        """No longer pending: its deadline is enforced elsewhere, or not at all."""
        return self._phase != _PENDING

    def expire(self) -> None:
        """Its deadline passed: a pending wait's future fails with :class:`WorkflowTimeout`."""
        future = self.future
        if self._phase == _PENDING and future is not None and not future.done():
            future.set_exception(wait_timed_out(self.workflow_id, self._timeout))
