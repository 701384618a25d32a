"""requirements.lock covers the workspace: every declared requirement is pinned within its
range, and what is installed is what the lock pins (a clone installs the same versions)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import sysconfig
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("cvops_lock", ROOT / "deploy" / "lock.py")
assert _spec is not None and _spec.loader is not None
lock = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lock)


def _declared() -> list[tuple[str, Requirement]]:
    """(where, requirement) for every member's dependencies, build backend and the dev group."""
    out = []
    root = tomllib.loads((ROOT / "pyproject.toml").read_text())
    out += [("pyproject.toml [dev]", Requirement(r)) for r in root["dependency-groups"]["dev"]]
    for member in lock.members(ROOT):
        meta = tomllib.loads((member / "pyproject.toml").read_text())
        where = str(member.relative_to(ROOT))
        out += [(where, Requirement(r)) for r in meta["project"].get("dependencies", [])]
        out += [(where, Requirement(r)) for r in meta["build-system"]["requires"]]
    return out


def test_every_declared_requirement_is_pinned_within_its_range() -> None:
    pins = lock.read_lock(ROOT / "requirements.lock")
    ours = lock.member_names(ROOT)
    problems = []
    for where, req in _declared():
        name = lock.normalise(req.name)
        if name in ours:
            continue
        if name not in pins:
            problems.append(f"{where}: {req} is not in requirements.lock")
        elif not req.specifier.contains(pins[name], prereleases=True):
            problems.append(f"{where}: {req} excludes the pinned {pins[name]}")
    assert not problems, "run `./justw lock`:\n" + "\n".join(problems)


def test_the_installed_versions_are_the_pinned_ones() -> None:
    pins = lock.read_lock(ROOT / "requirements.lock")
    # Only what pip installed into the environment: setuptools puts its own vendored copies
    # (packaging, zipp…) on sys.path once imported, and those are not installs.
    paths = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    installed = {
        lock.normalise(d.metadata["Name"]): d.version.split("+", 1)[0]
        for d in importlib.metadata.distributions(path=paths)
    }
    drift = {n: (v, installed[n]) for n, v in pins.items() if n in installed and installed[n] != v}
    assert not drift, (
        f"installed versions differ from requirements.lock (pinned, installed): {drift}"
    )
    unpinned = set(installed) - set(pins) - lock.member_names(ROOT)
    assert not unpinned, f"installed but not pinned: {sorted(unpinned)}; run `./justw lock`"


def test_the_lock_file_reads_back_what_was_rendered(tmp_path: Path) -> None:
    pins = {"msgspec": "0.23.0", "torch": "2.13.0"}
    path = tmp_path / "requirements.lock"
    path.write_text(lock.render(pins))
    assert lock.read_lock(path) == pins
    assert lock.normalise("Nvidia_PyTriton") == "nvidia-pytriton"
