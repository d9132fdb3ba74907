"""hlens benchmarks: speed and memory targets as ratios measured in one run (``python -m benchmarks.run``)."""
