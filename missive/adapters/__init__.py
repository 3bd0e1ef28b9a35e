"""Adapters run a processor on a transport: one module a transport.

This package imports no transport client: ``missive.adapters.redis`` needs
``missive[redis]``, and only importing that module loads it.
"""
