"""Candidate generation: the retriever protocol, the result type, and every retriever."""

from ecomrec.retrieval.als import ALSRetriever
from ecomrec.retrieval.base import Retriever
from ecomrec.retrieval.bi_encoder import BiEncoderRetriever
from ecomrec.retrieval.baselines import ItemKNNRetriever, PopularityRetriever, RepurchaseRetriever
from ecomrec.candidates import Candidates, top_k
from ecomrec.retrieval.fusion import HybridRetriever
from ecomrec.retrieval.sequence import SequenceRetriever

#: Retrievers by the method name reports and the CLI use.
RETRIEVERS: dict[str, type[Retriever]] = {
    cls.name: cls
    for cls in (PopularityRetriever, RepurchaseRetriever, ItemKNNRetriever, ALSRetriever, BiEncoderRetriever, SequenceRetriever,
                HybridRetriever)
}

__all__ = ["ALSRetriever", "BiEncoderRetriever", "HybridRetriever", "Candidates", "ItemKNNRetriever", "PopularityRetriever",
           "RETRIEVERS", "RepurchaseRetriever", "Retriever", "SequenceRetriever", "top_k"]
