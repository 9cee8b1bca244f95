"""Super-resolution networks, their shipped weights, and the inference engine."""

import os
from pathlib import Path

# Defined here, not in models.weights, so that reading settings does not import torch.
SHIPPED_WEIGHTS_DIR = Path(__file__).parent / "weights"
# Crops every model version is scored on, and int8 activations are calibrated on.
CANARY_DIR = Path(__file__).parent / "canary"

# OpenMP threads that finish a convolution early spin for the others by default. When the
# cores are shared (other processes, or more threads than cores), a spinning thread holds
# the core its partner needs: on the 2-core test machine under load, ESPCN with 2 threads
# took 6x as long as with 1. Sleeping waiters cost a wake-up per parallel region (a few
# per tile) and keep 2 threads as fast as 1 under load. This must be set before torch
# loads its OpenMP runtime, and every srstore process imports this package (through the
# settings) before torch; an operator's own OMP_WAIT_POLICY wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
