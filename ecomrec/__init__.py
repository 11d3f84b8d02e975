"""ecomrec: e-commerce recommendation and search.

Public API::

    from ecomrec import Engine, EngineConfig, datasets, evaluate
    data = datasets.online_retail("../shared/data/online-retail")
    train, test = data.split_by_time("2011-10-01")
    engine = Engine(EngineConfig()).fit(train)
    recs = engine.recommend(["17850"], k=10)          # purchase probabilities, and why
    hits = engine.search("red retrospot lunch bag", k=10)
    report = evaluate.benchmark(data, test_from="2011-10-01")
"""

__version__ = "0.1.0"

from ecomrec import datasets  # noqa: E402
from ecomrec import evaluation as evaluate  # noqa: E402
from ecomrec.config import EngineConfig  # noqa: E402
from ecomrec.data import Dataset, IdMap  # noqa: E402
from ecomrec.engine import Engine  # noqa: E402
from ecomrec.results import Results  # noqa: E402
from ecomrec.retrieval import Candidates  # noqa: E402

__all__ = ["Candidates", "Dataset", "Engine", "EngineConfig", "IdMap", "Results", "__version__", "datasets", "evaluate"]
