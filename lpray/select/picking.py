"""Which of the high-scoring frames to pick: spread over videos, over time and over appearance.

1. **Over videos**: the N picks are shared in proportion to the videos' frame counts (largest
   remainders; among equal remainders the video whose members disagree most, by median spread,
   first). A video that cannot fill its share (too short for the gap) passes the rest on.
2. **Over time**: within a video, candidates are taken greedily by score, skipping any frame
   closer than ``min_gap`` frames to one already taken (non-maximum suppression), up to
   ``pool_factor`` times the video's share.
3. **Over appearance**: the candidates' downsampled frames are clustered by k-means into as many
   clusters as the video has picks; the best-scoring candidate of each cluster is picked, so two
   frames that look alike (the animal resting in one pose) do not both take a label.
"""

from __future__ import annotations

import numpy as np


def suppress(score: np.ndarray, min_gap: int, count: int) -> np.ndarray:
    """Up to ``count`` frames by decreasing score, each at least ``min_gap`` from the others.

    Returns:
        Frame indices, best first.
    """
    if count <= 0 or len(score) == 0:
        return np.zeros(0, dtype=int)
    blocked = np.zeros(len(score), dtype=bool)
    taken: list[int] = []
    reach = max(min_gap, 1) - 1  # frames within reach of a taken frame are blocked
    # stable order: among equal scores the earlier frame first (reproducible picks)
    for t in np.argsort(-score, kind="stable"):
        if blocked[t]:
            continue
        taken.append(int(t))
        blocked[max(0, t - reach) : t + reach + 1] = True
        if len(taken) == count:
            break
    return np.asarray(taken, dtype=int)


def shares(frames: list[int], n: int, priority: list[float] | None = None) -> list[int]:
    """``n`` picks shared in proportion to ``frames`` (largest remainder; ties by ``priority``)."""
    total = sum(frames)
    if total == 0 or n <= 0:
        return [0] * len(frames)
    exact = [n * f / total for f in frames]
    out = [int(np.floor(e)) for e in exact]
    priority = priority if priority is not None else [0.0] * len(frames)
    order = sorted(range(len(frames)), key=lambda i: (-(exact[i] - out[i]), -priority[i], i))
    for i in order[: n - sum(out)]:
        out[i] += 1
    return out


def rebalance(wanted: list[int], available: list[int]) -> list[int]:
    """Move the share a video cannot fill (``available`` < ``wanted``) to videos with spare
    candidates, in proportion to their spare counts."""
    got = [min(w, a) for w, a in zip(wanted, available)]
    missing = sum(wanted) - sum(got)
    while missing > 0:
        spare = [a - g for a, g in zip(available, got)]
        if sum(spare) == 0:
            break
        extra = shares(spare, min(missing, sum(spare)))
        got = [g + e for g, e in zip(got, extra)]
        missing -= sum(extra)
    return got


def kmeans(points: np.ndarray, k: int, seed: int = 0, iterations: int = 50) -> np.ndarray:
    """Cluster labels of ``points`` (N, D) into ``k`` clusters (k-means++ start, Lloyd steps).

    Plain numpy: the candidates are a few hundred small thumbnails per video.
    """
    points = np.asarray(points, dtype=np.float64)
    n = len(points)
    if k >= n:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    centres = [points[rng.integers(n)]]
    distance = ((points - centres[0]) ** 2).sum(axis=1)
    for _ in range(1, k):
        if distance.sum() <= 0:  # fewer distinct points than clusters
            centres.append(points[rng.integers(n)])
        else:
            centres.append(points[rng.choice(n, p=distance / distance.sum())])
        distance = np.minimum(distance, ((points - centres[-1]) ** 2).sum(axis=1))
    centre = np.stack(centres)
    labels = np.full(n, -1)
    for _ in range(iterations):
        squared = ((points[:, None, :] - centre[None]) ** 2).sum(axis=-1)
        new = squared.argmin(axis=1)
        if np.array_equal(new, labels):
            break
        labels = new
        for c in range(k):
            members = points[labels == c]
            if len(members):
                centre[c] = members.mean(axis=0)
    return labels


def diverse(scores: np.ndarray, thumbnails: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """``k`` of the candidates: the best-scoring one of each k-means cluster of ``thumbnails``.

    Returns:
        Positions into the candidate arrays, best score first.
    """
    if k <= 0:
        return np.zeros(0, dtype=int)
    if k >= len(scores):
        return np.argsort(-scores, kind="stable")
    labels = kmeans(thumbnails, k, seed)
    chosen = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        chosen.append(int(members[np.argmax(scores[members])]))
    # identical thumbnails can leave clusters empty: fill with the best remaining candidates
    rest = [int(i) for i in np.argsort(-scores, kind="stable") if int(i) not in set(chosen)]
    chosen += rest[: k - len(chosen)]
    return np.asarray(sorted(chosen, key=lambda i: -scores[i]), dtype=int)
