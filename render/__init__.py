"""The rendering engine the API and the worker share: stored image, model pool, job queue.

Below ``app`` and ``worker`` (which both import it) and above ``models``/``imaging``; it never
imports an entry point, so a worker runs without the web framework.
"""
