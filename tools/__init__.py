"""Data and teacher generators: scripts (`python tools/NAME.py`) whose functions the tests and benchmarks import."""
