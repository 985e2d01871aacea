"""Training library behind `scripts/train.py`: tasks, architectures, data loading and export."""
