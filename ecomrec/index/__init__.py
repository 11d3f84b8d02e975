"""Vector indexes over item embeddings (FAISS), persisted as self-describing folders."""

from ecomrec.index.vector_index import VectorIndex

__all__ = ["VectorIndex"]
