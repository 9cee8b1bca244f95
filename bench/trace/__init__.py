"""``python -m bench.trace``: does keeping hot images full-size and cold ones as x4 copies pay?

A synthetic access trace (or a real access log) is replayed against a real ``srstore serve``
in each configuration, on an accelerated clock, and what each cost is priced: see
``bench/trace/__main__.py`` for the options and the README ("Tiering") for the results.
"""
