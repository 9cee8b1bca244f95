"""The one Settings object every process builds at start-up (``config.settings``)."""
