"""Vector indexes over item embeddings (FAISS), persisted as self-describing folders."""

from ecomrec.index.embedding_store import EmbeddingStore
from ecomrec.index.sharded import ShardedIndex, load_index, new_index, reused_shards, shard_builds, shard_of
from ecomrec.index.vector_index import VectorIndex

__all__ = ["EmbeddingStore", "ShardedIndex", "VectorIndex", "load_index", "new_index", "reused_shards", "shard_builds", "shard_of"]
