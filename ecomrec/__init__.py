"""ecomrec: e-commerce recommendation and search.

Public API::

    from ecomrec import datasets, evaluate
    data = datasets.online_retail("../shared/data/online-retail")
    report = evaluate.benchmark(data, test_from="2011-10-01")
"""

__version__ = "0.1.0"

from ecomrec import datasets  # noqa: E402
from ecomrec import evaluation as evaluate  # noqa: E402
from ecomrec.data import Dataset, IdMap  # noqa: E402
from ecomrec.retrieval import Candidates  # noqa: E402

__all__ = ["Candidates", "Dataset", "IdMap", "__version__", "datasets", "evaluate"]
