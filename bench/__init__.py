"""Benchmarks (not tests): ``python -m bench`` prints every table; see RESULTS.md.

``models`` is imported first, as every srstore process imports it before torch: it sets
OpenMP's wait policy, which torch's runtime reads once, when it loads.
"""

import models  # noqa: F401
