"""RaBitQ ``rabitq`` (1 bit per dimension) and extended RaBitQ ``rabitq<B>`` (B = 2..8 bits per dimension).

Fit: the centre c is the data mean; P is a random orthogonal matrix (QR of a seeded Gaussian,
stored in the state) on the dimension padded to D, a multiple of 64. A vector x is coded by
its residual direction o = P^T (x - c) / ||x - c|| rounded onto a grid: its signs for 1 bit
(code direction y = b - 1/2), and for B bits the levels x_u in 0..2^B-1 (y = x_u - (2^B - 1) / 2)
at the rescale factor t that maximises cos(y, o), found by searching over t as the paper does
(``kernels.rabitq.best_rescale``: a coarse grid, then an exact sweep of every t where a level
changes near the best grid point), not the precomputed "fast" t: encoding stays cheap at these
sizes and the search is the more accurate. The top bit of x_u is the sign code, so an extended
code holds a 1-bit code. Per-vector factors live in the code row (``kernels.rabitq`` layout).

Estimator (unbiased over the rotation): <o, q'> ~ <y, q'> / <y, o> with q' = P^T (q - c), so
ip: <q, x> ~ <q, c> + <c, x - c> + ||x - c|| <o, q - c>, and
l2: -||q - x||^2 ~ -||x - c||^2 - ||q - c||^2 + 2 ||x - c|| <o, q - c>.
The query is rounded to 4-bit levels for the sign code and scored with popcounts against its bit
planes. Rounding is to the nearest level, as FAISS does: randomised rounding (unbiased over the
rounding, twice the variance) measured ~0.004 lower recall@10 (scifact and synthetic:100000:384,
3 rotations each). Extended codes are scored incrementally: the full B-bit estimate (query at
min(8, B + 3) bits) only for rows whose 1-bit upper bound reaches the current k-th score.

Error bound: the estimate's error is close to normal with a standard deviation of at most
F_error * ||q - c|| / eps0 (eps0 = 1.9), so est +- F_error * ||q - c|| holds for ~94% of unrelated
pairs (more for close ones). ``bound_rerank`` uses it to score exactly only the candidates that
can still enter the top k.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from vecpack.codecs.base import Codec, Probe, Scorer
from vecpack.errors import InvalidInput
from vecpack.kernels.binary import shape_token
from vecpack.kernels.probe import RABITQ, RABITQ_EX, kind_token
from vecpack.kernels.rabitq import (
    EPS0,
    FACTOR_WORDS,
    QF_GERR,
    SLOT_ERROR,
    SLOT_ERROR_EX,
    prepare_queries,
    rabitq_decode,
    rabitq_encode,
    rabitq_scan,
    score_rows,
)

QUERY_BITS = 4  # query precision against the sign code
MAX_QUERY_BITS = 8  # query precision cap for the full extended estimate
ROTATION_SEED = 0x5EED
ENCODE_BLOCK = 16384  # rows rotated at once while encoding
#: default re-rank depth / k per bits (1..8). Measured recall@10 without re-rank on real embeddings
#: (scifact, synthetic:100000:384): 1 bit 0.72 / 0.69, 2: 0.85, 3: 0.91, 4: 0.95, 5: 0.97, 6: 0.98,
#: 8: 0.995; on clustered low-dimensional test data (d = 32..128, l2) these depths reach >= 0.99
RERANK_PER_K = (10, 10, 5, 3, 2, 2, 0, 0)


class RaBitQCodec(Codec):
    """RaBitQ codes of ``bits`` planes per dimension (1: ``rabitq``; 2..8: ``rabitq<B>``)."""

    family = "rabitq"

    def __init__(self, dim: int, metric: str, spec: str, bits: int) -> None:
        super().__init__(dim, metric, spec)
        if not 1 <= bits <= 8:
            raise InvalidInput(f"codec {spec!r}: bits per dimension must be 1..8, got {bits}")
        self.bits = bits
        self.words = -(-dim // 64)
        self.pdim = 64 * self.words
        #: query bits of the estimate that ranks: 4 for 1-bit codes, more for extended ones so that the
        #: query's rounding error stays below the code's (about 2^-(B-1) of the 1-bit error)
        self.query_bits = QUERY_BITS if bits == 1 else min(MAX_QUERY_BITS, bits + 3)

    @classmethod
    def from_spec(cls, dim: int, metric: str, spec: str, suffix: str | None) -> RaBitQCodec:
        """The codec of spec ``rabitq`` (no suffix: 1 bit) or ``rabitq<B>`` (suffix B in 2..8)."""
        if suffix and not 2 <= int(suffix) <= 8:
            raise InvalidInput(f"codec {spec!r}: 'rabitq<B>' takes B = 2..8 bits per dimension ('rabitq' is 1 bit)")
        return cls(dim, metric, spec, int(suffix) if suffix else 1)

    @property
    def code_size(self) -> int:
        return 8 * (self.words * self.bits + FACTOR_WORDS[self.bits > 1])

    def _fit(self, x, queries=None):
        self.centre = x.mean(axis=0, dtype=np.float64).astype(np.float32)
        rng = np.random.default_rng(ROTATION_SEED)
        q, r = np.linalg.qr(rng.standard_normal((self.pdim, self.pdim)))
        self.rotation = np.ascontiguousarray(q * np.sign(np.diag(r)), dtype=np.float32)  # Haar-distributed
        self._derive()

    def _encode(self, x):
        n = x.shape[0]
        words = np.zeros((n, self.code_size // 8), dtype=np.uint64)
        for a in range(0, n, ENCODE_BLOCK):
            residual = x[a : a + ENCODE_BLOCK] - self.centre
            norms = np.sqrt(np.einsum("ij,ij->i", residual, residual, dtype=np.float64)).astype(np.float32)
            o = self._rotate(residual)
            o /= np.where(norms > 0, norms, 1)[:, None]
            f_add = residual @ self.centre if self.metric == "ip" else -(norms.astype(np.float64) ** 2)
            block = words[a : a + ENCODE_BLOCK]
            rabitq_encode(
                o, norms, f_add.astype(np.float32), self._score_weight, self.bits, block, block.view(np.float32)
            )
        return words.view(np.uint8)

    def decode(self, codes):
        words = self._words(codes)
        return rabitq_decode(words, words.view(np.float32), self.bits) @ self.rotation.T[:, : self.dim] + self.centre

    def scorer(self, q):
        self._require_trained()
        return RaBitQScorer(self, q)

    def probe(self, q) -> Probe:
        self._require_trained()
        planes, qf = self._queries(self._rotate(q - self.centre), self.query_bits)
        return Probe(RABITQ if self.bits == 1 else RABITQ_EX, qf, planes.reshape(len(q), -1), np.uint64)

    def estimate(self, q: np.ndarray, codes: np.ndarray, eps0: float = EPS0) -> tuple[np.ndarray, np.ndarray]:
        """Estimates and error bounds of every query against every code row.

        Parameters
        ----------
        q : float32 (m, dim) queries; codes : uint8 (n, code_size).
        eps0 : confidence of the bound, in standard deviations of the estimate's error (for
            unrelated pairs; less for close ones): about 94% of pairs lie within the bound at the
            paper's 1.9, 99.7% at 3.

        Returns
        -------
        est, bound : float32 (m, n); the true similarity lies in est +- bound with that confidence
            (the query's rounding error aside: small against the bound).
        """
        self._require_trained()
        p = self.probe(self._check_input(q))
        words = self._words(codes)
        est = score_rows(kind_token(p.kind), p.qf, p.qw, words)
        slot = SLOT_ERROR if self.bits == 1 else SLOT_ERROR_EX
        f_error = words.view(np.float32)[:, 2 * self.words * self.bits + slot]
        return est, (eps0 / EPS0) * p.qf[:, QF_GERR, None] * f_error[None, :]

    def default_rerank(self, k: int) -> int:
        factor = RERANK_PER_K[self.bits - 1]
        return max(factor * k, 100) if self.bits <= 2 else factor * k

    def state(self):
        return {"centre": self.centre, "rotation": self.rotation}

    def set_state(self, arrays):
        self.centre = np.ascontiguousarray(arrays["centre"], dtype=np.float32)
        self.rotation = np.ascontiguousarray(arrays["rotation"], dtype=np.float32)
        self._derive()
        self.trained = True

    def _derive(self) -> None:
        """Query-side constants of the trained state: P^T c and ||c||^2."""
        self.centre_rot = self._rotate(self.centre[None])[0]
        self.centre_sq = float(np.dot(self.centre, self.centre))

    @property
    def _score_weight(self) -> float:
        """Weight of ||x - c|| <o, q - c> in the score: 1 for ip, 2 for l2."""
        return 1.0 if self.metric == "ip" else 2.0

    def _rotate(self, v: np.ndarray) -> np.ndarray:
        """P^T v for rows v float32 (n, dim), zero-padded to D: float32 (n, D)."""
        return v @ self.rotation[: self.dim]

    def _words(self, codes: np.ndarray) -> np.ndarray:
        codes = np.ascontiguousarray(codes, dtype=np.uint8)
        if codes.ndim != 2 or codes.shape[1] != self.code_size:
            raise InvalidInput(f"codec {self.spec!r} expects codes of shape (n, {self.code_size}), got {codes.shape}")
        return codes.view(np.uint64)

    def _queries(self, qr: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
        """``prepare_queries`` of rotated query residuals qr float32 (m, D) at ``bits`` bits."""
        qr = np.ascontiguousarray(qr, dtype=np.float32)
        return prepare_queries(qr, self.centre_rot, self.centre_sq, self.metric == "l2", self.bits, shape_token(bits))


class RaBitQScorer(Scorer):
    """Flat scans with popcounts (``kernels.rabitq.rabitq_scan``): 1-bit estimates, or for extended codes,
    1-bit estimates first and the full estimate only where the 1-bit upper bound beats the k-th score."""

    def __init__(self, codec: RaBitQCodec, q: np.ndarray) -> None:
        qr = np.ascontiguousarray(codec._rotate(np.asarray(q, dtype=np.float32) - codec.centre))
        self.planes, self.qf = codec._queries(qr, QUERY_BITS)
        if codec.bits == 1:
            self.kind, self.qw_full, self.qf_full = RABITQ, self.planes.reshape(len(qr), -1), self.qf
        else:
            planes, self.qf_full = codec._queries(qr, codec.query_bits)
            self.kind, self.qw_full = RABITQ_EX, planes.reshape(len(qr), -1)
        self.tokens = (shape_token(codec.words), shape_token(QUERY_BITS), shape_token(codec.code_size // 8))

    def scan(self, codes, row0, allowed, heap_s, heap_r) -> None:
        words = np.ascontiguousarray(codes).view(np.uint64)
        rabitq_scan(
            words, words.view(np.float32), row0, np.ascontiguousarray(allowed, dtype=np.uint8), self.planes, self.qf,
            self.qw_full, self.qf_full, kind_token(self.kind), heap_s, heap_r, *self.tokens,
        )  # fmt: skip


def bound_rerank(
    est: np.ndarray,
    bound: np.ndarray,
    exact: np.ndarray | Callable[[np.ndarray], np.ndarray],
    k: int,
) -> tuple[np.ndarray, np.ndarray, int]:
    """The top k of candidates by exact score, computing exact scores only where the bound leaves doubt.

    Candidates are visited by decreasing upper bound est + bound; one whose upper bound does not
    exceed the k-th best exact score found so far cannot enter the top k (if the bounds hold), and
    neither can any later one, so the visit stops there.

    Parameters
    ----------
    est, bound : float (c,): estimated similarities and their error bounds (>= 0).
    exact : float (c,) exact similarities, or a callable mapping candidate positions int64 (j,) to
        their exact similarities float (j,); only the visited candidates are read.
    k : how many to return, >= 1.

    Returns
    -------
    positions : int64 (min(k, c),) candidate positions, best first.
    scores : float64 (min(k, c),) their exact similarities.
    n_exact : how many exact similarities were computed.
    """
    est = np.asarray(est, dtype=np.float64)
    bound = np.asarray(bound, dtype=np.float64)
    if est.ndim != 1 or est.shape != bound.shape:
        raise InvalidInput(f"est and bound must be 1-D of one length, got {est.shape} and {bound.shape}")
    if k < 1:
        raise InvalidInput(f"k must be >= 1, got {k}")
    if np.any(bound < 0):
        raise InvalidInput("bounds must be >= 0")
    score_of = exact if callable(exact) else np.asarray(exact, dtype=np.float64).__getitem__
    upper = est + bound
    order = np.argsort(-upper, kind="stable")
    first = order[:k]
    top_s = np.asarray(score_of(first), dtype=np.float64)
    top_p = first.copy()
    n_exact = len(first)
    if len(first) == k:
        worst = int(np.argmin(top_s))
        for pos in order[k:]:
            if upper[pos] <= top_s[worst]:
                break
            s = float(np.asarray(score_of(np.array([pos])))[0])
            n_exact += 1
            if s > top_s[worst]:
                top_s[worst] = s
                top_p[worst] = pos
                worst = int(np.argmin(top_s))
    best = np.argsort(-top_s, kind="stable")
    return top_p[best], top_s[best], n_exact
