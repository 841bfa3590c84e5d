"""Tile width of TRL's fused LM head on a CPU.

TRL scores sampled tokens without materialising the ``[tokens, vocabulary]`` logits: its fused
LM head (``ChunkedLogProbFunction``) projects the hidden states onto the vocabulary one tile of
columns at a time and folds each tile into running log-sum-exp statistics, in the forward and
again in the backward. Its tiles are 32,768 columns wide, sized for a GPU's Triton kernel. On a
CPU the tiles are folded by plain torch ops, each of which writes a tile-sized temporary: at a
few hundred tokens, tens of megabytes per op that leave the caches, so the fold, not the
projection, takes most of the head's time. Narrower tiles keep those temporaries in cache: a
300-token forward and backward of the embedded model's head ran about 3x faster with 1,024
columns than with 32,768, and 1.8x at 1,200 tokens (figures in docs/results.md). The result is
the same computation in another summation order.

The width is fixed rather than sized to each call's tokens (the best width halves as the tokens
double), so that a sequence's log-probs do not depend on what else shares its pass: the shared
and unshared passes, and any ``micro_batch_size``, stay the same computation. TRL passes the
width from a module constant; :func:`cpu_tiles` sets it to :data:`CPU_TILE_COLUMNS` while it is
active for a model on a CPU (the backward reuses the forward's width). A TRL without that
constant gets a warning and its own tiles.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

CPU_TILE_COLUMNS = 1024
"""Vocabulary columns per tile of TRL's fused LM head on a CPU (the fastest width measured at
the 200-600 tokens of a pass of one sequence)."""


@contextlib.contextmanager
def cpu_tiles(device: torch.device) -> Iterator[None]:
    """Inside the block, TRL's fused LM head works in tiles of :data:`CPU_TILE_COLUMNS` columns
    (TRL's, where narrower) when ``device`` is a CPU; elsewhere in TRL's."""
    from trl.trainer import utils

    width = getattr(utils, "_CHUNKED_LOGPROB_CHUNK_SIZE", None)
    if device.type != "cpu" or width is None:
        if width is None:
            logger.warning("this TRL's fused LM head has no tile width to set: its own stays")
        yield
        return
    utils._CHUNKED_LOGPROB_CHUNK_SIZE = min(width, CPU_TILE_COLUMNS)
    try:
        yield
    finally:
        utils._CHUNKED_LOGPROB_CHUNK_SIZE = width
