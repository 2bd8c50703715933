"""Dense retrieval: a faiss vector index (``Index``) with add, search, save and load.

faiss is imported only when an index is built or loaded (``pip install faiss-cpu``).
"""

from contrastkit.retrieval.index import Index

__all__ = ["Index"]
