"""A codec behind a chain of transforms: ``"pca192,lvq4x8"``, ``"mrl256,rabitq4"``, ``"opq48,pq48"``.

Like a FAISS index factory string: every element but the last is a transform,
the last is a codec over the transformed vectors. Queries go through the same
transforms (``Transform.apply_query``), then through the codec's scorer or probe,
so every index works with every chain.
"""

from __future__ import annotations

import numpy as np

from vecpack.codecs.base import Codec, Probe, Scorer
from vecpack.codecs.transform import Transform


class ChainCodec(Codec):
    family = "chain"

    def __init__(self, dim: int, metric: str, spec: str, transforms: list[Transform], codec: Codec) -> None:
        super().__init__(dim, metric, spec)
        self.transforms = transforms
        self.codec = codec
        self.min_train_rows = max([codec.min_train_rows] + [t.min_train_rows for t in transforms])

    @property
    def code_size(self) -> int:
        return self.codec.code_size

    @property
    def lossless_transforms(self) -> bool:
        return all(t.lossless for t in self.transforms)

    def _fit(self, x, queries=None):
        """Fit each transform on the output of the previous one, then the codec."""
        for t in self.transforms:
            t.fit(x, queries)
            x = t.apply(x)
            queries = None if queries is None else t.apply_query(queries)
        self.codec.fit(x)

    def _encode(self, x):
        return self.codec.encode(self.forward(x))

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Data rows through every transform."""
        for t in self.transforms:
            x = t.apply(x)
        return x

    def forward_query(self, q: np.ndarray) -> np.ndarray:
        """Query rows through every transform."""
        q = np.ascontiguousarray(q, dtype=np.float32)
        for t in self.transforms:
            q = t.apply_query(q)
        return q

    def decode(self, codes):
        y = self.codec.decode(codes)
        for t in reversed(self.transforms):
            y = t.inverse(y)
        return y

    def scorer(self, q) -> Scorer:
        self._require_trained()
        return self.codec.scorer(self.forward_query(q))

    def probe(self, q) -> Probe:
        self._require_trained()
        return self.codec.probe(self.forward_query(q))

    def scan_layout(self, codes, done=None):
        return self.codec.scan_layout(codes, done)

    def refine_pool(self, k: int) -> int:
        return self.codec.refine_pool(k)

    def rescore(self, q, codes):
        return self.codec.rescore(self.forward_query(q), codes)

    def refine_probe(self, probe):
        return self.codec.refine_probe(probe)

    def default_rerank(self, k: int) -> int:
        inner = self.codec.default_rerank(k)
        return inner if self.lossless_transforms else max(inner, 10 * k, 100)

    def state(self):
        out = {f"c.{name}": a for name, a in self.codec.state().items()}
        for i, t in enumerate(self.transforms):
            out.update({f"t{i}.{name}": a for name, a in t.state().items()})
        return out

    def set_state(self, arrays):
        for i, t in enumerate(self.transforms):
            t.set_state({name.split(".", 1)[1]: a for name, a in arrays.items() if name.startswith(f"t{i}.")})
        self.codec.set_state({name[2:]: a for name, a in arrays.items() if name.startswith("c.")})
        self.trained = True
