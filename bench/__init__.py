"""Benchmarks of fastunitary. Results (JSON, plots) go to bench/results/."""
