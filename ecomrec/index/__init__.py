"""Vector indexes over item embeddings (FAISS), persisted as self-describing folders."""

from ecomrec.index.embedding_store import EmbeddingStore
from ecomrec.index.sharded import ShardedIndex, shard_of
from ecomrec.index.vector_index import VectorIndex

__all__ = ["EmbeddingStore", "ShardedIndex", "VectorIndex", "shard_of"]
