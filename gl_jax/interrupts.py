"""SIGINT (Ctrl-C) and SIGTERM (a scheduler's pre-emption): one line during start-up, a checkpoint after.

`handle_signals()` installs one handler for both signals. It always records the signal in `pending`.
Outside a `defer()` block it also raises `Interrupted` where the main thread is (Python runs handlers
between bytecodes, so inside a long compile it is raised when the compile returns); the command prints
one line and exits with 128 + the signal number. Python swallows an exception raised inside a garbage
collector or weakref callback, where a handler may happen to run, so `check()` raises again for a
recorded signal at safe points (entering `defer()`, and before the command exits); the swallowed copy is
kept off the terminal. Inside `defer()` (the training loop) a signal is only recorded: the loop sees
`pending`, saves a checkpoint at the next step, and clears `pending` once it has acted. The handler is
installed by `gl-jax` before anything heavy is imported, and by `train_and_evaluate` itself when called
from Python.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator

__all__ = ["Interrupted", "SignalState", "handle_signals", "signal_name"]

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


class Interrupted(KeyboardInterrupt):
    """A SIGINT or SIGTERM stopped the job; `str(e)` is the one line to show.

    A `KeyboardInterrupt`, so `except Exception` does not swallow it, as for Ctrl-C in plain Python.

    Attributes:
      signum: the signal.
      exit_code: 128 + signum, the shell's convention for a process ended by a signal.
    """

    def __init__(self, signum: int, message: str | None = None):
        self.signum = signum
        self.exit_code = 128 + int(signum)
        super().__init__(message or f"interrupted by {signal_name(signum)}")

    def __str__(self) -> str:
        return str(self.args[0])


class SignalState:
    """What the handler has seen: `pending` is the signal received inside `defer()`, if any."""

    def __init__(self) -> None:
        self.pending: int | None = None
        # Completes "interrupted by SIGINT ..." for a signal outside `defer()`; jobs update it as they go.
        self.when = "during start-up; nothing was saved"
        self._deferring = 0

    def _handle(self, signum, frame) -> None:
        del frame
        self.pending = signum
        if not self._deferring:
            self.check()

    def check(self) -> None:
        """Raises `Interrupted` for a recorded signal that nothing has acted on yet."""
        if self.pending is not None:
            raise Interrupted(self.pending, f"interrupted by {signal_name(self.pending)} {self.when}")

    @contextlib.contextmanager
    def defer(self) -> Iterator[SignalState]:
        """Inside the block a signal only sets `pending` (checked by the caller at safe points)."""
        self.check()  # A signal whose exception was swallowed before the block.
        self._deferring += 1
        try:
            yield self
        finally:
            self._deferring -= 1


_state: SignalState | None = None


@contextlib.contextmanager
def handle_signals() -> Iterator[SignalState]:
    """Handles SIGINT and SIGTERM for the block (re-entrant: an inner call shares the outer state).

    Off the main thread (where Python cannot install handlers) the state never sees a signal.
    """
    global _state
    if _state is not None:
        yield _state
        return
    state = SignalState()
    if threading.current_thread() is not threading.main_thread():
        yield state
        return
    previous = {s: signal.signal(s, state._handle) for s in SIGNALS}
    previous_hook = sys.unraisablehook
    _state = state

    def hook(unraisable) -> None:
        if not isinstance(unraisable.exc_value, Interrupted):  # Ours is raised again by `check()`.
            previous_hook(unraisable)

    sys.unraisablehook = hook
    try:
        yield state
    finally:
        _state = None
        sys.unraisablehook = previous_hook
        for s, handler in previous.items():
            signal.signal(s, handler)
