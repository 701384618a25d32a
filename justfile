# cvops tasks. Run through ./justw, which makes .venv and installs the workspace first.

set shell := ["bash", "-euo", "pipefail", "-c"]

python := ".venv/bin/python"

# list the recipes
default:
    @just --list

# the whole test suite with workspace coverage
test *args:
    {{python}} -m pytest --cov --cov-report=term --cov-report=xml -q {{args}}

# the fault suite: kill -9 of each worker and of nats-server mid-job, a poison event, a full
# disk (tmpfs; needs root); prints a FAULT line of figures per test (not in `test`: minutes)
faults *args:
    {{python}} -m pytest -m faults -q -s {{args}}

# ruff lint + format check
lint:
    {{python}} -m ruff check .
    {{python}} -m ruff format --check .

# format the code
fmt:
    {{python}} -m ruff check --fix .
    {{python}} -m ruff format .

# static types of every workspace member's src/ (found as ./justw finds the members)
typecheck:
    #!/usr/bin/env bash
    set -euo pipefail
    srcs=()
    for m in contracts libs/* services/*; do
      if [ -f "$m/pyproject.toml" ] && [ -d "$m/src" ]; then srcs+=("$m/src"); fi
    done
    # the src/ directories are also the package bases that name the modules (cvops.*)
    MYPYPATH="$(IFS=:; echo "${srcs[*]}")" {{python}} -m mypy "${srcs[@]}"

# pin every third-party package anew in requirements.lock (./justw installs from it);
# --keep holds today's pins and only pins what is new
lock *args:
    {{python}} deploy/lock.py {{args}}

# regenerate contracts/schemas/ from the event classes
schemas:
    {{python}} -m cvops.contracts.schemas contracts/schemas

# schemathesis vs the gateway's OpenAPI as an admin, >= 1,000 cases (own gateway, or --url URL)
fuzz *args:
    {{python}} tests/security/fuzz.py {{args}}

# start NATS and every service locally (state in .cvops/)
up:
    {{python}} -m cvops.core.local up

# stop everything `up` started
down:
    {{python}} -m cvops.core.local down

# each process, its port and health
status:
    {{python}} -m cvops.core.local status

# event path benchmark: append+project vs raw JetStream, fsync always vs default
bench-events *args:
    {{python}} bench/event_path.py {{args}}

# CPU engine benchmark: ORT FP32 vs torch eager, INT8 vs FP32, OpenVINO vs ORT
bench-engines-cpu *args:
    {{python}} bench/engines_cpu.py {{args}}

# GPU engine benchmark: eager FP32/FP16, compile, CUDA graphs vs max-autotune (skips without CUDA)
bench-engines-gpu *args:
    {{python}} bench/engines_gpu.py {{args}}

# sweep time: the default engine sweep of a small model (early stop) vs a 5 s-per-cell long run
bench-sweep-time *args:
    {{python}} bench/sweep_time.py {{args}}

# locust load of a running `up` (reads, uploads, jobs, SSE, inference; --users 1000 --duration 10m)
load *args:
    {{python}} bench/load/run.py {{args}}

# search quality: the trainer's GA vs random search vs Optuna TPE / NSGA-II (--quick: minutes)
bench-search *args:
    {{python}} bench/search_quality.py {{args}}

# search quality over many seeds on a surrogate fitted to real trials (bench/data)
bench-search-surrogate *args:
    {{python}} bench/search_surrogate.py {{args}}

# serving benchmark: router vs direct Triton vs in-process ORT, batching on/off
bench-serving *args:
    {{python}} bench/serving/load.py {{args}}

# web UI pages: server-side time of the models list and a 1,000-version model page vs their JSON
bench-web *args:
    {{python}} bench/web_pages.py {{args}}
