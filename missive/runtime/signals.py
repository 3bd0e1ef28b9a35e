"""stop_on_signals: SIGINT and SIGTERM call a function while a block runs."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType

__all__ = ["stop_on_signals"]


@contextlib.contextmanager
def stop_on_signals(on_signal: Callable[[int], None]) -> Iterator[None]:
    """While in this block, SIGINT and SIGTERM call ``on_signal(signum)`` (main thread only).

    The previous handlers are restored when the block ends. In other threads, where
    Python cannot set signal handlers, this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        on_signal(signum)

    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {signum: signal.signal(signum, handler) for signum in signals}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
