"""Write the JSON schemas of all events into contracts/schemas/ (``python -m``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from cvops.contracts import json_schemas


def render() -> dict[str, str]:
    """File name -> file text for every event schema."""
    return {
        f"{tag}.json": json.dumps(schema, indent=2, sort_keys=True) + "\n"
        for tag, schema in json_schemas().items()
    }


def write(directory: Path) -> list[str]:
    directory.mkdir(parents=True, exist_ok=True)
    files = render()
    for old in directory.glob("*.json"):
        if old.name not in files:
            old.unlink()
    for name, text in files.items():
        (directory / name).write_text(text)
    return sorted(files)


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parents[3] / "schemas"
    for name in write(target):
        print(name)
