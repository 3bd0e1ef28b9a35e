"""LoopThread: an asyncio event loop on a thread of its own, for a run's async code.

A processing context starts one when it first meets a coroutine (an ``async def``
handler or hook), so that every coroutine of one run, whichever thread reaches it,
runs on the same loop: a client a ``before_processing`` hook opened is usable by
every handler.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["LoopThread", "is_async_callable"]

T = TypeVar("T")


def is_async_callable(function: object) -> bool:
    """Whether calling ``function`` returns a coroutine (an ``async def``, or an object
    whose ``__call__`` is one)."""
    if inspect.iscoroutinefunction(function):
        return True
    call = getattr(function, "__call__", None)  # noqa: B004  # an instance's method
    return call is not None and inspect.iscoroutinefunction(call)


async def _await(awaitable: Awaitable[T]) -> T:
    return await awaitable


class LoopThread:
    """An event loop running forever in a daemon thread, until :meth:`close`.

    :param name: the thread's name.
    """

    def __init__(self, name: str = "missive-asyncio") -> None:
        self.loop = asyncio.new_event_loop()
        started = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(started,), name=name, daemon=True)
        self.thread.start()
        started.wait()

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(started.set)
        self.loop.run_forever()

    def submit(self, awaitable: Awaitable[T]) -> concurrent.futures.Future[T]:
        """Schedule ``awaitable`` on the loop; its result comes through the future."""
        coroutine: Coroutine[Any, Any, T] = (
            awaitable if inspect.iscoroutine(awaitable) else _await(awaitable)
        )
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def run(self, awaitable: Awaitable[T]) -> T:
        """Run ``awaitable`` on the loop and wait for its result (or its exception).

        :raises RuntimeError: if called from the loop's own thread, where waiting would
            block the loop forever.
        """
        if threading.current_thread() is self.thread:
            if inspect.iscoroutine(awaitable):
                awaitable.close()
            raise RuntimeError(
                "a coroutine was reached from synchronous code running on the event loop "
                "itself; await it instead"
            )
        return self.submit(awaitable).result()

    def call(self, function: Callable[[], T]) -> T:
        """Run ``function`` on the loop's thread and wait for its result."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def call() -> None:
            try:
                future.set_result(function())
            except BaseException as exc:
                future.set_exception(exc)

        self.loop.call_soon_threadsafe(call)
        return future.result()

    def close(self) -> None:
        """Cancel what still runs on the loop, stop it and wait for its thread. Idempotent."""
        loop = self.loop
        if loop.is_closed():
            return
        if self.thread.is_alive():
            self.submit(_cancel_others()).result()
            loop.call_soon_threadsafe(loop.stop)
            self.thread.join()
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


async def _cancel_others() -> None:
    """Cancel every task of the running loop but this one, and wait for them to end."""
    current = asyncio.current_task()
    tasks = [task for task in asyncio.all_tasks() if task is not current]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
