"""Tasks by domain. Importing this package declares every job type."""

from tasks import platform

__all__ = ["platform"]
