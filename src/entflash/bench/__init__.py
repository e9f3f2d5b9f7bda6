"""Benchmark and sparsity CLI: `python -m entflash.bench` (docs/performance.md)."""
