"""smearscan: automated peripheral blood smear analysis for hematology labs.

The library API lives in :mod:`smearscan.pipeline`; the ``smearscan`` command
(:mod:`smearscan.cli`) is a thin adapter over it.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
