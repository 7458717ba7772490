"""Data committed with the tests (tests/data/README.md says where each file comes from).

A test-support module like zoo.py: tests import it as a plain module (`from local_data import MNIST10K`;
pytest puts tests/ on sys.path). Nothing here reads outside the clone.
"""

from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"
MNIST10K = DATA / "mnist10k.npz"  # MNIST test set: 8,000 train + 2,000 test images, uint8
