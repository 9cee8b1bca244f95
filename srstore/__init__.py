"""The ``srstore`` command: one entry point over the API, the worker, the trainer, the admin."""
