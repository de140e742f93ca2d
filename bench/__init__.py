"""Benchmark harness for zero-shot subject-driven image generation.

Importing this package is cheap: models, metrics and methods load lazily through
:mod:`bench.registry`.
"""

__version__ = "0.1.0"


class BenchError(Exception):
    """An error caused by the user's input or environment.

    The CLI prints its message as one line (no traceback) and exits with status 2, so the
    message must name what is wrong: the file, the method, the option.
    """
