"""Search quality over many seeds, on a surrogate fitted to real trials.

``search_quality.py`` trains every trial, so it affords 3 seeds; with 24 trials a search's
hypervolume varies a lot from seed to seed, and 3 seeds cannot tell a better operator from
luck. This benchmark runs the same methods (the trainer's GA through its own handlers,
random search, Optuna TPE and NSGA-II: ``search_quality``'s functions) on a surrogate of the
same space: random forests fitted to a few hundred real trials of ``simple-cnn`` (trained,
exported, measured in ONNX Runtime by the trainer's trial function; the rows live in
``bench/data/``). Accuracy is the forest's per-epoch val accuracy curve (so pruning sees a
curve) plus noise fixed per (configuration, seed); latency comes from the parameter count,
with 5 % noise. A run of 24 seeds takes minutes, so it is where the GA's operators were
chosen; ``search_quality.py`` is where they are confirmed on real training.

    python bench/search_surrogate.py                       # 24 seeds, both data sets
    python bench/search_surrogate.py --seeds 48 --methods ga,random,nsga2
    python bench/search_surrogate.py pruning               # the pruning rule on the real rows
    python bench/search_surrogate.py collect shapes 400    # more real rows (slow)

Which set the rows describe: every row ``collect`` writes carries the fingerprint of the data
set it was measured on (``data``: sha256 of x, y and classes). The older rows carry none;
``UNMARKED_ROWS`` says which set they were measured on. The digits rows were measured on
today's ``digits``. The 346 shapes rows in ``bench/data/search_trials_shapes.jsonl`` were
measured on an earlier, libs/vision-only ``shapes`` generator (10 axis-aligned masks:
circle, square, triangle, ring, cross, diamond, hbar, vbar, x, frame) that users never got;
``shapes`` is now the registry's bundled set. The surrogate still fits its shapes forests to
those rows, and every run that uses them prints a note: its shapes figures describe the
earlier set. ``collect`` refuses to add rows of the current set to a file of another set;
move the file aside and collect anew to measure the bundled set.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import search_quality as sq
from sklearn.ensemble import RandomForestRegressor

from cvops.trainer import search, space
from cvops.vision.data import CanonicalDataset
from cvops.vision.zoo import build_model, parameter_count

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "bench" / "data"
MODE = sq.FULL  # the rows were made with search_quality.py's full run's training
EPOCHS = MODE.epochs
ACCURACY_NOISE = 0.01  # sd of a configuration's val accuracy between seeds, roughly
LATENCY_NOISE = 0.05  # relative sd of a latency measurement


# The data set the rows without a ``data`` fingerprint were measured on (see the docstring):
# its fingerprint and what it was.
UNMARKED_ROWS = {
    "digits": ("1c4d276af78c6a13", "cvops.vision.bundled.digits_npz(size=16), as today"),
    "shapes": (
        "e39c85164c20639f",
        "2,000 16x16 images of an earlier libs/vision-only generator that users never got",
    ),
}


def load_sets(names: list[str]) -> dict[str, CanonicalDataset]:
    """The data sets of search_quality.py's full run."""
    arrays = MODE.sets()
    return {n: CanonicalDataset.from_arrays(arrays[n], source=n) for n in names}


def fingerprint(ds: CanonicalDataset) -> str:
    """Which data set a row was measured on: sha256 of x, y and classes (16 hex digits)."""
    digest = hashlib.sha256()
    for part in (ds.x, ds.y, np.asarray(ds.classes, dtype=str)):
        digest.update(np.ascontiguousarray(part).tobytes())
    return digest.hexdigest()[:16]


def rows_path(name: str) -> Path:
    return DATA / f"search_trials_{name}.jsonl"


def read_rows(name: str) -> list[dict[str, Any]]:
    path = rows_path(name)
    return [json.loads(line) for line in path.open()] if path.exists() else []


def other_set_note(name: str, rows: list[dict[str, Any]], current: str) -> str | None:
    """A note when some of the rows were measured on another data set than ``current``."""
    unmarked, what = UNMARKED_ROWS.get(name, ("", ""))
    other = [r for r in rows if r.get("data", unmarked) != current]
    if not other:
        return None
    earlier = f" ({what})" if any("data" not in r for r in other) else ""
    return (
        f"note: {len(other)} of the {len(rows)} {name} rows in "
        f"{rows_path(name).relative_to(ROOT)} were measured on another data set than "
        f"today's `{name}`{earlier}; the {name} figures describe that set. Move the file "
        f"aside and `collect {name} N` to measure the current one."
    )


def collect(name: str, count: int) -> None:
    """Append ``count`` real trials of uniformly random configurations to the data set's rows."""
    datasets = load_sets([name])
    current = fingerprint(datasets[name])
    existing = read_rows(name)
    if other_set_note(name, existing, current):
        sys.exit(
            f"{rows_path(name).relative_to(ROOT)}: its rows were measured on another data set "
            f"than today's `{name}`; move the file aside to collect rows of the current set"
        )
    space_ = sq.search_space(datasets[name])
    evaluate = sq.Evaluator(datasets, EPOCHS, MODE.batches)
    path = rows_path(name)
    done = len(existing)
    rng = np.random.default_rng(1000 + done)
    with path.open("a") as out:
        for i in range(count):
            config = space.decode(space_, rng.random(len(space_)).tolist(), {})
            result, curve = evaluate(name, (done + i) % 3, config)
            row = {
                "config": config,
                "accuracy": result.accuracy,
                "latency_ms": result.latency_ms,
                "parameters": result.parameters,
                "curve": curve,
                "data": current,
            }
            out.write(json.dumps(row) + "\n")
            out.flush()
            print(f"{name} {done + i + 1}: {result.status} {result.accuracy}", flush=True)


class Surrogate(sq.Evaluator):
    """search_quality's Evaluator with the training replaced by forests fitted to real rows."""

    def __init__(self, datasets: dict[str, CanonicalDataset]) -> None:
        super().__init__(datasets, EPOCHS, MODE.batches)
        self.space = sq.search_space(next(iter(datasets.values())))
        self.names = sorted(self.space)
        self.forests: dict[str, tuple[RandomForestRegressor, RandomForestRegressor]] = {}
        self.rows: dict[str, int] = {}
        self.parameters: dict[tuple[str, float, int], int] = {}
        self.notes: list[str] = []
        for name in datasets:
            rows = read_rows(name)
            note = other_set_note(name, rows, fingerprint(datasets[name]))
            if note:
                self.notes.append(note)
            rows = [r for r in rows if r["accuracy"] is not None and len(r["curve"]) == EPOCHS]
            x = np.array([self.features(r["config"]) for r in rows])
            curves = RandomForestRegressor(200, min_samples_leaf=2, random_state=0)
            curves.fit(x, np.array([r["curve"] for r in rows]))
            latency = RandomForestRegressor(100, min_samples_leaf=3, random_state=0)
            latency.fit(
                np.log([[r["parameters"]] for r in rows]), np.log([r["latency_ms"] for r in rows])
            )
            self.forests[name] = (curves, latency)
            self.rows[name] = len(rows)

    def features(self, config: dict[str, Any]) -> list[float]:
        return [space.encode_value(self.space[k], config[k]) for k in self.names]

    def model_parameters(self, dataset: str, config: dict[str, Any]) -> int:
        key = (dataset, float(config["width"]), int(config["depth"]))
        if key not in self.parameters:
            ds = self.datasets[dataset]
            model = build_model(
                sq.ARCH, ds.num_classes, ds.channels, ds.image_size,
                width=key[1], depth=key[2], dropout=0.0,
            )  # fmt: skip
            self.parameters[key] = parameter_count(model)
        return self.parameters[key]

    def __call__(self, dataset, seed, config, on_epoch=None):  # type: ignore[no-untyped-def]
        curves, latency = self.forests[dataset]
        digest = hashlib.sha256(json.dumps([dataset, seed, config], sort_keys=True).encode())
        rng = np.random.default_rng(int(digest.hexdigest()[:12], 16))
        curve = curves.predict([self.features(config)])[0] + rng.normal(0, ACCURACY_NOISE, EPOCHS)
        curve = np.clip(curve, 0.0, 1.0).tolist()
        parameters = self.model_parameters(dataset, config)
        ms = float(
            np.exp(latency.predict(np.log([[parameters]]))[0] + rng.normal(0, LATENCY_NOISE))
        )
        for epoch, acc in enumerate(curve, start=1):
            if on_epoch is not None and on_epoch(epoch, 0.0, acc) == "stop":
                return sq.Result(config, None, None, parameters, 0.0, "pruned"), curve[:epoch]
        return sq.Result(config, curve[-1], ms, parameters, 0.0), curve


def pruning(names: list[str], draws: int = 4000) -> None:
    """How often the trainer's pruning rule stops a trial that would have ended the best of
    its peers (or in their top quarter), on the real rows: a trial and eight finished peers
    drawn at random, the rule asked after each epoch, with and without its first-half grace."""
    rng = np.random.default_rng(0)
    datasets = load_sets(names)
    for name in names:
        rows = read_rows(name)
        note = other_set_note(name, rows, fingerprint(datasets[name]))
        if note:
            print(note, flush=True)
        curves = np.array([r["curve"] for r in rows if r["accuracy"] is not None])
        for first_epoch in (1, math.ceil(EPOCHS / 2)):
            stopped = best = top = saved = 0
            for _ in range(draws):
                pick = rng.choice(len(curves), 9, replace=False)
                trial, peers = curves[pick[0]], curves[pick[1:]]
                for epoch in range(first_epoch, EPOCHS):
                    progress = [search.PeerProgress(float(p), 1) for p in peers[:, epoch - 1]]
                    # before half-way the rule is asked as if this epoch were half of the
                    # training: the rule without its grace period
                    epochs = EPOCHS if epoch >= math.ceil(EPOCHS / 2) else 2 * epoch
                    if search.prune_reason(
                        float(trial[epoch - 1]), epoch, epochs, 1, progress, ["accuracy"]
                    ):
                        stopped += 1
                        saved += EPOCHS - epoch
                        best += trial[-1] >= peers[:, -1].max()
                        top += trial[-1] >= np.quantile(peers[:, -1], 0.75)
                        break
            print(
                f"{name:7} asked from epoch {first_epoch} of {EPOCHS}: stops "
                f"{stopped / draws:.0%} of trials, saving {saved / draws:.2f} epochs a trial; "
                f"of those stopped, {best / max(stopped, 1):.1%} would have ended the best of "
                f"their nine, {top / max(stopped, 1):.1%} in the top quarter"
            )


def compare(names: list[str], seeds: list[int], methods: list[str]) -> dict[str, Any]:
    surrogate = Surrogate(load_sets(names))
    pop = MODE.population
    trials = pop * MODE.generations
    print(
        f"surrogate search quality: {trials} trials per search ({pop} x {MODE.generations}), "
        f"{len(seeds)} seeds, "
        f"forests on {', '.join(f'{n} {surrogate.rows[n]} trials' for n in names)}",
        flush=True,
    )
    for note in surrogate.notes:
        print(note, flush=True)
    runs = []
    started = time.perf_counter()
    for name in names:
        for seed in seeds:
            for m in methods:
                if m in ("ga", "ga-acc"):
                    objectives = ["accuracy", "latency"] if m == "ga" else ["accuracy"]
                    runs.append(sq.run_ga(surrogate, name, seed, pop, MODE.generations, objectives))
                elif m == "random":
                    runs.append(sq.run_random(surrogate, name, seed, trials, surrogate.space))
                else:
                    space_ = surrogate.space
                    runs.append(sq.run_optuna(m, surrogate, name, seed, trials, pop, space_))
    figures = sq.report(runs, seeds, names, show_rate=False)
    print(f"{len(runs)} searches in {time.perf_counter() - started:.0f} s (trials/h: not real)")
    for note in surrogate.notes:  # again below the table, where the figures are read
        print(note, flush=True)
    if surrogate.notes:
        figures["notes"] = surrogate.notes
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", nargs="*", help="'collect NAME COUNT' adds real rows")
    parser.add_argument("--datasets", default="digits,shapes")
    parser.add_argument("--methods", default=",".join(sq.METHODS))
    parser.add_argument("--seeds", type=int, default=24)
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args(argv)
    if args.command:
        if args.command == ["pruning"]:
            pruning([d for d in args.datasets.split(",") if d])
            return 0
        if args.command[0] != "collect" or len(args.command) != 3:
            parser.error("commands: pruning, or collect NAME COUNT")
        collect(args.command[1], int(args.command[2]))
        return 0
    names = [d for d in args.datasets.split(",") if d]
    methods = [m for m in args.methods.split(",") if m]
    figures = compare(names, list(range(args.seeds)), methods)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
