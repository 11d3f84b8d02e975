"""Reranking: collaborative features, the BERT cross-encoder text score, the purchase model."""

from ecomrec.rerank.reranker import PurchaseReranker, RerankedRetriever, training_examples

__all__ = ["PurchaseReranker", "RerankedRetriever", "training_examples"]
