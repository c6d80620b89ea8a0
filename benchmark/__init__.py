"""Benchmark harness for self-supervised multi-source satellite learning.

The harness (this package) runs entries on tasks, scores them with bootstrap intervals, measures
throughput and stores machine-readable records. It never imports a concrete task or entry: they
are found through the registry (entry points ``benchmark.tasks`` and ``benchmark.entries``).
"""

__version__ = "0.1.0"
