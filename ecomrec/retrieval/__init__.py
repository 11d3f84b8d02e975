"""Candidate generation: the retriever protocol, the result type, and every retriever."""

from ecomrec.retrieval.als import ALSRetriever
from ecomrec.retrieval.base import Retriever
from ecomrec.retrieval.baselines import ItemKNNRetriever, PopularityRetriever, RepurchaseRetriever
from ecomrec.retrieval.candidates import Candidates, top_k

#: Retrievers by the method name reports and the CLI use.
RETRIEVERS: dict[str, type[Retriever]] = {
    cls.name: cls for cls in (PopularityRetriever, RepurchaseRetriever, ItemKNNRetriever, ALSRetriever)
}

__all__ = [
    "ALSRetriever",
    "Candidates",
    "ItemKNNRetriever",
    "PopularityRetriever",
    "RETRIEVERS",
    "RepurchaseRetriever",
    "Retriever",
    "top_k",
]
