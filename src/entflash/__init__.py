"""entflash: adaptive sparse (α-entmax) flash attention for PyTorch."""

from .attention import entmax_attention, entmax_attention_varlen
from .entmax import entmax, entmax15, sparsemax

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "entmax",
    "entmax15",
    "sparsemax",
    "entmax_attention",
    "entmax_attention_varlen",
]
