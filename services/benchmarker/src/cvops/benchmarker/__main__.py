"""``python -m cvops.benchmarker``: run the benchmarker service until SIGTERM."""

from cvops.benchmarker.app import main
from cvops.core import run_service

if __name__ == "__main__":
    run_service("benchmarker", main)
