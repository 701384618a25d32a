"""``python -m cvops.converter``: run the converter service until SIGTERM."""

from cvops.converter.app import main
from cvops.core import run_service

if __name__ == "__main__":
    run_service("converter", main)
