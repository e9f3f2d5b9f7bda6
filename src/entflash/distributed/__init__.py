"""entflash under torch.distributed: attention over a sequence sharded across ranks.

Two methods (docs/design.md, "Distributed"):

* `sequence_parallel_attention` (and `_varlen`): head sharding by all-to-all; each rank runs the ordinary
  kernels on whole sequences for H / world heads. Needs world | Hkv. Exact.
* `context_parallel_attention`: keys stay sharded; τ is solved on per-row partial sums combined across ranks.
  For when the heads are too few to shard. Exact; torch operations.

`shard_sequence` / `gather_sequence` / `positions` give the layouts ("contiguous", "zigzag").
"""

from .context import context_parallel_attention
from .layout import LAYOUTS, gather_sequence, positions, shard_sequence
from .sequence import heads_to_seq, seq_to_heads, sequence_parallel_attention, sequence_parallel_attention_varlen

__all__ = ["sequence_parallel_attention", "sequence_parallel_attention_varlen", "context_parallel_attention",
           "shard_sequence", "gather_sequence", "positions", "LAYOUTS", "seq_to_heads", "heads_to_seq"]
