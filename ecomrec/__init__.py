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

from ecomrec import datasets
from ecomrec import evaluation as evaluate
from ecomrec.config import EngineConfig
from ecomrec.data import Dataset, IdMap
from ecomrec.engine import Engine
from ecomrec.results import Results
from ecomrec.retrieval import Candidates
from ecomrec.version import __version__

__all__ = ["Candidates", "Dataset", "Engine", "EngineConfig", "IdMap", "Results", "__version__", "datasets", "evaluate"]
