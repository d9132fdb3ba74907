"""hlens benchmarks: speed and memory targets as ratios measured in one run.

Run them with ``python -m benchmarks.run [--quick]``.
"""
