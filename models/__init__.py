"""Super-resolution networks, their shipped weights, and the inference engine."""
