"""Per-trait-value image masks for dynamic masking (docs/method.md section 4).

A mask is a boolean array (height x width, the collection's native size) per
``(trait_type, value)``. ``official`` reads them from a collection's layer art;
``derived`` finds them from its token images alone, where nobody published
layers; ``store`` builds each collection's once and keeps them in S3; ``draw``
is the per-sample draw that hides picked traits in image and caption.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Key = tuple[str, str]
Mask = npt.NDArray[np.bool_]


def iou(a: Mask, b: Mask) -> float:
    """Intersection over union of two masks of one shape; 1.0 when both are empty."""
    if a.shape != b.shape:
        raise ValueError(f"mask shapes differ: {a.shape} and {b.shape}")
    union = int(np.logical_or(a, b).sum())
    return 1.0 if union == 0 else int(np.logical_and(a, b).sum()) / union
