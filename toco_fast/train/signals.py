"""Stopping a run cleanly on SIGTERM (a scheduler's preemption, ``kill``) or a first Ctrl-C (SIGINT): the handlers
only raise a flag, the loop finishes the iteration in progress, writes a checkpoint and returns. A second Ctrl-C
interrupts at once, as usual."""
import signal
import threading
from typing import Optional


class StopSignals:
    """Context manager: while active, SIGTERM and SIGINT set ``received`` (the signal number) instead of stopping
    the process. Handlers can only be installed from the main thread; elsewhere it does nothing."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.received: Optional[int] = None
        self._previous = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        self.received = signum
