"""The genetic search, as pure functions of what was measured: ranking by Pareto dominance
(or a weighted objective), constraint handling, the next population through EvoTorch's
functional operators, and the pruning rule.

Randomness comes only from the seed passed in: the same archive and seed give the same
population. EvoTorch's operators draw from torch's global generator, so they run inside
``torch.random.fork_rng`` seeded from that seed (the caller's generator is left as it was).
They are imported where they are used: importing evotorch imports ray (seconds), which a
trainer process that only runs trials never needs.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import torch

from cvops.contracts.training import Constraints, TrialMetrics

SENSE = {"accuracy": "max", "latency": "min", "size": "min"}
# The operators' spread, chosen on the search-quality surrogate (bench/search_surrogate.py,
# 24 seeds on ~700 real trials): at a few dozen trials, wide steps beat the textbook's
# near-parent children (SBX eta 15, mutation eta 20 on a tenth of the genes), which stalled
# in whichever region the first generation happened to sample.
SBX_ETA = 2.0  # crowding index of simulated binary crossover: children spread about as far
#                as their parents are apart
MUTATION_ETA = 5.0  # polynomial mutation: steps of about a tenth of a range, one in ten a third
MUTATION_RATE = 0.25  # per gene (at least 1/d): about two genes of nine move per child
TOURNAMENT_SIZE = 2
SWAP_PROBABILITY = 0.5  # per gene, the two children of a pair trade values (Deb's SBX)
MIN_NOVELTY = 0.05  # a child differs from every tried genome by this much in some gene


@dataclass(frozen=True)
class Evaluated:
    """A finished trial as the search sees it."""

    trial_id: str
    genome: list[float]
    metrics: TrialMetrics
    violation: float = 0.0  # 0 when every constraint holds; grows with how far it misses

    @property
    def feasible(self) -> bool:
        return self.violation == 0.0


def derive_seed(seed: int, *parts: int) -> int:
    """A 63-bit seed for one step (e.g. one generation) of a seeded job."""
    value = seed & (2**63 - 1)
    for p in parts:
        value = (value * 1_000_003 + p + 1) % (2**63 - 1)
    return value


def constraint_violation(metrics: TrialMetrics, constraints: Constraints) -> tuple[float, str]:
    """How far a model misses the constraints (relative excess, summed) and why, or (0, "")."""
    excess = 0.0
    reasons = []
    checks = (
        ("latency", metrics.latency_ms, constraints.max_latency_ms, "ms"),
        ("parameters", float(metrics.parameters), constraints.max_parameters, ""),
        ("size", float(metrics.size_bytes), constraints.max_size_bytes, " bytes"),
    )
    for name, value, limit, unit in checks:
        if limit is not None and value > limit:
            excess += (value - limit) / max(float(limit), 1e-9)
            reasons.append(f"{name} {value:g}{unit} over the limit of {limit:g}{unit}")
    return excess, "; ".join(reasons)


def _objective_columns(items: Sequence[Evaluated], objectives: Sequence[str]) -> torch.Tensor:
    """(n, m) objective values; latency and size on a log scale so crowding compares ratios."""
    cols = []
    for obj in objectives:
        if obj == "accuracy":
            cols.append([e.metrics.accuracy for e in items])
        elif obj == "latency":
            cols.append([math.log(max(e.metrics.latency_ms, 1e-6)) for e in items])
        elif obj == "size":
            cols.append([math.log(max(e.metrics.size_bytes, 1)) for e in items])
        else:
            raise ValueError(f"unknown objective {obj!r}")
    return torch.tensor(cols, dtype=torch.float64).T.reshape(len(items), len(objectives))


def _penalised(items: Sequence[Evaluated], objectives: Sequence[str]) -> torch.Tensor:
    """Objective values where an infeasible model is worse than every feasible one."""
    evals = _objective_columns(items, objectives)
    if not items:
        return evals
    worst = []
    for j, obj in enumerate(objectives):
        col = evals[:, j]
        worst.append(col.min() - 1.0 if SENSE[obj] == "max" else col.max() + 1.0)
    for i, e in enumerate(items):
        if not e.feasible:
            for j, obj in enumerate(objectives):
                step = 1.0 + e.violation
                evals[i, j] = worst[j] - step if SENSE[obj] == "max" else worst[j] + step
    return evals


def pareto_front(items: Sequence[Evaluated], objectives: Sequence[str]) -> list[int]:
    """Indices of the feasible trials no other feasible trial dominates (EvoTorch's test)."""
    feasible = [i for i, e in enumerate(items) if e.feasible]
    if not feasible:
        return []
    sub = [items[i] for i in feasible]
    if len(objectives) == 1:
        sign = 1.0 if SENSE[objectives[0]] == "max" else -1.0
        col = _objective_columns(sub, objectives)[:, 0] * sign
        best = float(col.max())
        return [feasible[i] for i in range(len(sub)) if float(col[i]) == best]
    from evotorch.operators import functional as evo

    counts = evo.domination_counts(
        _objective_columns(sub, objectives), objective_sense=[SENSE[o] for o in objectives]
    )
    return [feasible[i] for i in range(len(sub)) if int(counts[i]) == 0]


def weighted_scores(
    items: Sequence[Evaluated], objectives: Sequence[str], weights: dict[str, float]
) -> list[float]:
    """Each objective min-max scaled over ``items`` (1 = best), weighted, summed; infeasible
    trials get their score minus 1 + violation."""
    if not items:
        return []
    evals = _objective_columns(items, objectives)
    total = sum(weights.get(o, 0.0) for o in objectives) or 1.0
    scores = torch.zeros(len(items), dtype=torch.float64)
    for j, obj in enumerate(objectives):
        col = evals[:, j]
        span = float(col.max() - col.min())
        scaled = (col - col.min()) / span if span > 0 else torch.ones_like(col)
        if SENSE[obj] == "min":
            scaled = 1.0 - scaled
        scores += weights.get(obj, 0.0) / total * scaled
    return [
        float(s) if e.feasible else float(s) - 1.0 - e.violation
        for s, e in zip(scores, items, strict=True)
    ]


def rank_utilities(
    items: Sequence[Evaluated],
    objectives: Sequence[str],
    mode: str,
    weights: dict[str, float],
) -> list[float]:
    """One number per trial, higher is better: Pareto level plus crowding, or the weighted score."""
    if not items:
        return []
    if mode == "weighted" or len(objectives) == 1:
        return weighted_scores(items, objectives, weights or {o: 1.0 for o in objectives})
    from evotorch.operators import functional as evo

    utilities = evo.pareto_utility(
        _penalised(items, objectives), objective_sense=[SENSE[o] for o in objectives]
    )
    return [float(u) for u in utilities]


def initial_genomes(dims: int, count: int, seed: int) -> list[list[float]]:
    """A Latin hypercube over [0, 1]^dims: every gene's range is covered evenly."""
    gen = torch.Generator().manual_seed(seed)
    columns = []
    for _ in range(dims):
        strata = torch.randperm(count, generator=gen).to(torch.float64)
        columns.append((strata + torch.rand(count, generator=gen, dtype=torch.float64)) / count)
    if dims == 0:
        return [[] for _ in range(count)]
    return torch.stack(columns, dim=1).tolist()


def pool_size(count: int, archived: int) -> int:
    """Parents come from the best half of a generation's size (at least two): with a few
    dozen trials in all, breeding from the better half beats keeping the whole archive."""
    return max(2, min(archived, math.ceil(count / 2)))


def polynomial_mutation(
    genomes: torch.Tensor, probability: float, gen: torch.Generator, eta: float = MUTATION_ETA
) -> torch.Tensor:
    """Deb's polynomial mutation on genes in [0, 1], each gene with ``probability``."""
    u = torch.rand(genomes.shape, generator=gen, dtype=genomes.dtype)
    delta = torch.where(
        u < 0.5,
        (2 * u) ** (1 / (eta + 1)) - 1,
        1 - (2 * (1 - u)) ** (1 / (eta + 1)),
    )
    hit = torch.rand(genomes.shape, generator=gen, dtype=genomes.dtype) < probability
    return torch.where(hit, genomes + delta, genomes).clamp(0.0, 1.0)


def next_genomes(
    archive: Sequence[Evaluated],
    count: int,
    dims: int,
    seed: int,
    objectives: Sequence[str],
    mode: str,
    weights: dict[str, float],
    key: Callable[[list[float]], Hashable],
    tried: Sequence[list[float]] = (),
) -> list[tuple[list[float], list[str]]]:
    """``count`` children of the job's archive with the trial ids of their parents.

    Elitism (mu + lambda): the parents' pool is the best half-generation of finished trials
    of the whole job (take_best: Pareto level then crowding, or the weighted score), so a
    good model never drops out. Parents come from binary tournaments on that pool, children from
    simulated binary crossover (with the per-gene exchange between the two children) plus
    polynomial mutation. A child whose configuration was already tried (``key``), or that
    lies within MIN_NOVELTY of a tried genome in every gene (``archive`` plus ``tried``, e.g.
    failed or pruned trials), is mutated again, then replaced by a random one.
    """
    from evotorch.operators import functional as evo

    gen = torch.Generator().manual_seed(seed)
    seen: set[Hashable] = {key(g) for g in tried} | {key(e.genome) for e in archive}
    children: list[tuple[list[float], list[str]]] = []
    if len(archive) >= 2 and dims > 0:
        values = torch.tensor([e.genome for e in archive], dtype=torch.float64)
        # the archive index rides along as a last column so the pool knows who is who
        indexed = torch.cat([values, torch.arange(len(archive), dtype=torch.float64)[:, None]], 1)
        utilities = torch.tensor(rank_utilities(archive, objectives, mode, weights))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            pool, pool_utils = evo.take_best(
                indexed, utilities, pool_size(count, len(archive)), objective_sense="max"
            )
            pool_values, pool_index = pool[:, :-1], [int(i) for i in pool[:, -1]]
            tournaments = count + (count % 2)
            picked = evo.tournament(
                pool_values,
                pool_utils,
                num_tournaments=tournaments,
                tournament_size=TOURNAMENT_SIZE,
                objective_sense="max",
                return_indices=True,
            )
            parents = pool_values[picked]
            offspring = evo.simulated_binary_cross_over(parents, eta=SBX_ETA)
        offspring = swap_genes(offspring, SWAP_PROBABILITY, gen)
        offspring = polynomial_mutation(offspring, max(1.0 / dims, MUTATION_RATE), gen)
        half = tournaments // 2
        for i in range(tournaments):
            a, b = int(picked[i % half]), int(picked[half + i % half])
            ids = sorted({archive[pool_index[a]].trial_id, archive[pool_index[b]].trial_id})
            children.append((offspring[i].tolist(), ids))
    while len(children) < count:  # too few finished trials to breed from: sample
        children.append((torch.rand(dims, generator=gen, dtype=torch.float64).tolist(), []))
    out: list[tuple[list[float], list[str]]] = []
    known = [list(g) for g in tried] + [e.genome for e in archive]
    for genome, parents_ids in children[:count]:
        candidate = torch.tensor(genome, dtype=torch.float64)
        for attempt in range(12):
            if key(candidate.tolist()) not in seen and novel(candidate, known):
                break
            if attempt < 10:  # stronger and stronger steps away from what was tried
                candidate = polynomial_mutation(candidate, 0.5, gen, eta=10.0 - attempt)
            else:
                candidate = torch.rand(dims, generator=gen, dtype=torch.float64)
        genome = candidate.tolist()
        seen.add(key(genome))
        known.append(genome)
        out.append((genome, parents_ids))
    return out


def swap_genes(offspring: torch.Tensor, probability: float, gen: torch.Generator) -> torch.Tensor:
    """Per gene, the two children of a pair (row i and row i + n/2, as EvoTorch's SBX stacks
    them) trade values: SBX's recombination step, so a child mixes both parents' genes."""
    half = offspring.shape[0] // 2
    if half == 0:
        return offspring
    first, second = offspring[:half], offspring[half : 2 * half]
    swap = torch.rand(first.shape, generator=gen, dtype=offspring.dtype) < probability
    mixed = torch.cat([torch.where(swap, second, first), torch.where(swap, first, second)])
    return torch.cat([mixed, offspring[2 * half :]])


def novel(candidate: torch.Tensor, known: Sequence[list[float]]) -> bool:
    """Whether a genome differs from every known one by MIN_NOVELTY in at least one gene
    (a near-copy of a tried configuration would spend a trial learning nothing)."""
    if not known or candidate.numel() == 0:
        return True
    others = torch.tensor(known, dtype=candidate.dtype)
    return bool(((others - candidate).abs().amax(dim=1) >= MIN_NOVELTY).all())


# -- pruning --------------------------------------------------------------------------------


@dataclass(frozen=True)
class PeerProgress:
    """Val accuracy a finished trial of the same job had after the same epoch."""

    val_accuracy: float
    parameters: int


PRUNE_MARGIN = 0.15
PRUNE_MIN_PEERS = 3


def prune_reason(
    val_accuracy: float,
    epoch: int,
    epochs: int,
    parameters: int,
    peers: Sequence[PeerProgress],
    objectives: Sequence[str],
    margin: float = PRUNE_MARGIN,
    min_peers: int = PRUNE_MIN_PEERS,
) -> str | None:
    """Why a trial should stop after ``epoch`` (1-based), or None to go on.

    A trial is clearly dominated when at least ``min_peers`` comparable finished trials had,
    after the same epoch, a median val accuracy more than ``margin`` above its own.
    Comparable: when latency or size are objectives, only peers with no more parameters
    than this trial (a smaller model may trade accuracy for speed and stay on the front).
    Never in the first half of training: on the real digits trials of bench/data, 1.9 % of
    the trials this rule stopped after epoch 1 of 4 would have ended the best of their nine
    peers and 7 % in the top quarter (slow starters: low SGD learning rates, strong
    augmentation); asked from half-way, 0.1 % and 1.4 %, and it still stops a third of all
    trials (``bench/search_surrogate.py pruning``). Never after the last epoch either.
    """
    if epoch < max(1, math.ceil(epochs / 2)) or epoch >= epochs:
        return None
    small_matters = any(o in ("latency", "size") for o in objectives)
    comparable = [p for p in peers if not small_matters or p.parameters <= parameters]
    if len(comparable) < min_peers:
        return None
    median = statistics.median(p.val_accuracy for p in comparable)
    if val_accuracy < median - margin:
        return (
            f"val accuracy {val_accuracy:.3f} after epoch {epoch} is below the median "
            f"{median:.3f} of {len(comparable)} comparable finished trials by more than "
            f"{margin:.2f}"
        )
    return None
