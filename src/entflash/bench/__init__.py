"""Benchmark and sparsity CLI: `python -m entflash.bench` (DESIGN.md §6)."""
