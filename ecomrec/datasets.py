"""Loaders users call: ``from ecomrec import datasets; data = datasets.online_retail(path)``."""

from ecomrec.data.generic import CatalogColumns, InteractionColumns, dunnhumby_sample, from_files
from ecomrec.data.online_retail import cache_dir, download_online_retail, online_retail
from ecomrec.data.synthetic import synthetic

__all__ = [
    "CatalogColumns",
    "InteractionColumns",
    "cache_dir",
    "download_online_retail",
    "dunnhumby_sample",
    "from_files",
    "online_retail",
    "synthetic",
]
