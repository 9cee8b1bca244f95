"""``srstore worker``: inference processes that take cache misses from a Redis stream."""
