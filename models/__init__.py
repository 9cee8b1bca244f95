"""Super-resolution networks, their shipped weights, and the inference engine."""

from pathlib import Path

# Defined here, not in models.weights, so that reading settings does not import torch.
SHIPPED_WEIGHTS_DIR = Path(__file__).parent / "weights"
