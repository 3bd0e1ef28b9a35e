"""SQLite stores across ``fork()``: a child never uses, closes or frees a connection
it inherited (SQLite connections must not cross ``fork()``), and gets a new lock for
each store, since a thread of the parent may have held one at ``fork()``."""

from __future__ import annotations

import os
import sqlite3
import threading
import weakref
from typing import Any

__all__ = ["inherited", "register"]

#: Connections a forked child inherited: kept, so that they are never freed.
inherited: list[sqlite3.Connection] = []
# Keyed by id(): a store is a mapping, unhashable.
_stores: weakref.WeakValueDictionary[int, Any] = weakref.WeakValueDictionary()


def register(store: Any) -> None:
    """Give ``store`` (which has a ``_lock``) a new lock in each forked child."""
    _stores[id(store)] = store


def _after_fork_in_child() -> None:
    for store in list(_stores.values()):
        store._lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)
