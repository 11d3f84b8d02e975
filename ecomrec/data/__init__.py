"""Data layer: loaders, cleaning, id maps, the Dataset, text, synthetic data."""

from ecomrec.data.catalog import Catalog
from ecomrec.data.cleaning import CleaningReport
from ecomrec.data.dataset import Dataset
from ecomrec.data.idmap import IdMap

__all__ = ["Catalog", "CleaningReport", "Dataset", "IdMap"]
