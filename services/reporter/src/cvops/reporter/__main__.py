"""``python -m cvops.reporter``: run the reporter service until SIGTERM."""

from cvops.core import run_service
from cvops.reporter.app import main

if __name__ == "__main__":
    run_service("reporter", main)
