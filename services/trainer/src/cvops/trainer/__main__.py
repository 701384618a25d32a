"""``python -m cvops.trainer``: the trainer service."""

from cvops.core import run_service
from cvops.trainer.app import main

if __name__ == "__main__":
    run_service("trainer", main)
