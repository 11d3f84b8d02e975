"""The version of ecomrec in use: the installed package's, from its metadata."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ecomrec")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
