"""``./justw fuzz``: schemathesis against the gateway's own OpenAPI document, as an admin.

Without ``--url`` it starts what it fuzzes: a JetStream server and ``python -m cvops.gateway``
on loopback ports, in a temporary home (the gateway's first start bootstraps the admin whose
token makes the fuzzer's user). With ``--url`` it fuzzes a running gateway (``./justw up``),
signing in with ``--credentials`` (the file ``up`` wrote). Either way the run gets an admin
of its own with a fresh API token, so nothing it does can lock out the bootstrapped admin.

Every generated request must get a response that is not a 5xx, whose status, content type
and body the document declares for the operation. ``POST /auth/logout`` is left out (it
revokes the token it is called with); revoking a token by id and changing a user are fuzzed
but never name the fuzzer's own token or user, nor the admin that made it (``protect``).
``--cases`` spreads that many over the operations in the fuzzing phase; the examples,
coverage and stateful phases add their own. Exit status 1 when any check failed, any request
got no response, or the gateway it started logged a traceback.

It lives beside the security suite, not in ``bench/``: it checks behaviour, it measures no
ratio, and ``test_fuzz.py`` runs it the way CI does.
"""

from __future__ import annotations

import argparse
import json
import math
import secrets
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
)
# The one operation that always revokes the token it is called with. Two others can lock the
# fuzzer out when they name it (revoking a token by id, changing or disabling a user; the
# stateful phase feeds them ids and names from GET /auth/tokens and GET /users): they are
# fuzzed, but never with the fuzzer's own token id or username, nor the admin it signed in
# with (``protect`` renames them).
SELF_REVOKING = (("POST", "/auth/logout"),)
NEVER_NAMING_THE_FUZZER = ("DELETE /auth/tokens/{token_id}", "GET/PATCH /users/{username}")
PHASES = ("examples", "coverage", "fuzzing", "stateful")
DEFAULT_CASES = 1000
FUZZ_PASSWORD = "fuzz-" + "p" * 12  # the run's admin: a throwaway user in a throwaway home


@dataclass
class Finding:
    check: str
    operation: str
    status: int | None
    message: str
    curl: str


@dataclass
class Summary:
    """What a run did: cases sent, per check how many passed and failed, what failed."""

    url: str
    seed: int
    operations: int
    excluded: list[str]
    cases: int = 0
    no_response: int = 0
    checks: dict[str, Counter[str]] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def failures(self) -> int:
        return sum(c["failure"] for c in self.checks.values())

    @property
    def ok(self) -> bool:
        return self.failures == 0 and not self.errors and self.no_response == 0

    def as_json(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "seed": self.seed,
            "operations": self.operations,
            "excluded": self.excluded,
            "cases": self.cases,
            "no_response": self.no_response,
            "seconds": round(self.seconds, 1),
            "checks": {
                name: {"passed": c["success"], "failed": c["failure"]}
                for name, c in sorted(self.checks.items())
            },
            "statuses": dict(sorted(self.statuses.items())),
            "failures": self.failures,
            "findings": [f.__dict__ for f in self.findings],
            "errors": self.errors,
            "ok": self.ok,
        }


@dataclass(frozen=True)
class Identity:
    """Who the fuzzer is: a user and API token made for the run, and who made it."""

    username: str
    token_id: str
    headers: dict[str, str]
    admin: str  # the admin whose token made the user: never changed by the run either


def fuzz_user(url: str, admin_headers: dict[str, str]) -> Identity:
    """A new admin for this run, with an API token of its own."""
    username = f"fuzz-{secrets.token_hex(6)}"
    with httpx.Client(base_url=url, timeout=60) as client:
        admin = client.get("/auth/me", headers=admin_headers)
        admin.raise_for_status()
        made = client.post(
            "/users",
            json={"username": username, "password": FUZZ_PASSWORD, "role": "admin"},
            headers=admin_headers,
        )
        made.raise_for_status()
        login = client.post("/auth/login", json={"username": username, "password": FUZZ_PASSWORD})
        login.raise_for_status()
        session = {"Authorization": f"Bearer {login.json()['token']}"}
        token = client.post("/auth/tokens", json={"label": "fuzz"}, headers=session)
        token.raise_for_status()
    return Identity(
        username=username,
        token_id=token.json()["token_id"],
        headers={"Authorization": f"Bearer {token.json()['token']}"},
        admin=admin.json()["username"],
    )


def protect(identity: Identity) -> Any:
    """A ``map_case`` hook: a case that names the fuzzer's token or user, or its admin, names
    another one instead (a filter would starve hypothesis of the stateful phase's cases)."""
    users = {identity.username, identity.admin}

    def map_case(_context: Any, case: Any) -> Any:
        parameters = case.path_parameters or {}
        if parameters.get("token_id") == identity.token_id:
            parameters["token_id"] = f"not-{identity.token_id}"
        if parameters.get("username") in users:
            parameters["username"] = f"not-{parameters['username']}"
        return case

    return map_case


def run(
    url: str,
    identity: Identity,
    *,
    cases: int,
    seed: int,
    request_timeout: float,
    phases: list[str] | None = None,
    checks: tuple[str, ...] = CHECKS,
) -> Summary:
    """Fuzz every operation of ``url``'s document but ``SELF_REVOKING``; about ``cases``
    generated requests in all (spread evenly over the operations)."""
    import schemathesis
    from schemathesis.config import SchemathesisConfig
    from schemathesis.engine import events, from_schema

    document = httpx.get(f"{url}/schema/openapi.json", timeout=30).json()
    methods = {"get", "put", "post", "delete", "patch"}
    operations = [
        (m.upper(), p) for p, item in document["paths"].items() for m in item if m in methods
    ]
    fuzzed = [op for op in operations if op not in SELF_REVOKING]
    per_operation = max(1, math.ceil(cases / len(fuzzed)))
    config = SchemathesisConfig.from_dict(
        {
            "seed": seed,
            "headers": identity.headers,
            "workers": 1,
            "request-timeout": request_timeout,
            # an SSE feed follows until the client stops reading: read a few events, stop
            "max-stream-events": 5,
            "continue-on-failure": True,
            # ... and the feed of a correlation id with no new events sends nothing for
            # seconds: give it one second, as a client reading a live feed would wait
            "operations": [{"include-path": "/events/{correlation_id}", "request-timeout": 1}],
            "generation": {"max-examples": per_operation, "mode": "all"},
            "checks": {"enabled": False, **{name: {"enabled": True} for name in checks}},
            "warnings": False,
            **(
                {"phases": {name: {"enabled": name in phases} for name in PHASES}} if phases else {}
            ),
        }
    )
    schema = schemathesis.openapi.from_dict(document, config=config)
    schema.config.update(base_url=url)
    for method, path in SELF_REVOKING:
        schema = schema.exclude(method=method, path=path)
    schema.hook(protect(identity))

    summary = Summary(
        url=url,
        seed=seed,
        operations=len(fuzzed),
        excluded=[f"{m} {p}" for m, p in SELF_REVOKING if (m, p) in operations],
    )
    started = time.monotonic()
    seen: set[tuple[str, str, str]] = set()
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished | events.FuzzScenarioFinished):
            recorder = event.recorder
            for case_id in recorder.cases:
                interaction = recorder.interactions.get(case_id)
                if interaction is None:
                    continue
                summary.cases += 1
                if interaction.response is None:
                    summary.no_response += 1
                else:
                    summary.statuses[str(interaction.response.status_code)] += 1
            for case_id, nodes in recorder.checks.items():
                for node in nodes:
                    summary.checks.setdefault(node.name, Counter())[str(node.status)] += 1
                    info = node.failure_info
                    if info is None:
                        continue
                    node_case = recorder.cases.get(case_id)
                    operation = node_case.value.operation.label if node_case else recorder.label
                    key = (node.name, operation, info.failure.title)
                    if key in seen:
                        continue
                    seen.add(key)
                    response = recorder.interactions.get(case_id)
                    status = (
                        response.response.status_code if response and response.response else None
                    )
                    summary.findings.append(
                        Finding(
                            check=node.name,
                            operation=operation,
                            status=status,
                            message=f"{info.failure.title}: {info.failure.message}"[:2000],
                            curl=info.code_sample,
                        )
                    )
        elif isinstance(event, events.NonFatalError):
            summary.errors.append(f"{event.label}: {event.info.format()}"[:2000])
        elif isinstance(event, events.FatalError):
            summary.errors.append(f"fatal: {event.exception!r}")
    summary.seconds = time.monotonic() - started
    for name in checks:
        summary.checks.setdefault(name, Counter())
    return summary


def print_summary(summary: Summary) -> None:
    print(f"fuzzed {summary.url}: {summary.operations} operations, seed {summary.seed}")
    print(f"excluded (revokes the fuzzer's own token): {', '.join(summary.excluded)}")
    print(f"fuzzed without naming the fuzzer's token or user: {', '.join(NEVER_NAMING_THE_FUZZER)}")
    print(
        f"cases: {summary.cases} in {summary.seconds:.0f} s "
        f"(no response: {summary.no_response}); statuses: {dict(sorted(summary.statuses.items()))}"
    )
    print(f"{'check':34} {'passed':>8} {'failed':>8}")
    for name, counts in sorted(summary.checks.items()):
        print(f"{name:34} {counts['success']:>8} {counts['failure']:>8}")
    for finding in summary.findings:
        print(f"\nFAILED {finding.check} on {finding.operation} ({finding.status})")
        print(f"  {finding.message}")
        print(f"  {finding.curl}")
    for error in summary.errors:
        print(f"\nERROR {error}")
    print("\nok" if summary.ok else f"\n{summary.failures} failed checks")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fuzz", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running gateway (default: start one on loopback)")
    parser.add_argument(
        "--credentials",
        default=".cvops/admin.credentials",
        help="with --url: the bootstrapped admin's credentials file (default: %(default)s)",
    )
    parser.add_argument(
        "--cases",
        type=int,
        default=DEFAULT_CASES,
        help="fuzzing-phase cases over all operations; other phases add theirs (%(default)s)",
    )
    parser.add_argument("--seed", type=int, default=20261203)
    parser.add_argument("--request-timeout", type=float, default=10.0)
    parser.add_argument(
        "--phases",
        type=lambda text: text.split(","),
        help=f"comma-separated, of {','.join(PHASES)} (default: all)",
    )
    parser.add_argument(
        "--checks",
        type=lambda text: tuple(text.split(",")),
        default=CHECKS,
        help="comma-separated schemathesis checks (default: %(default)s)",
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(argv)

    if args.url:
        creds = dict(line.split("=", 1) for line in Path(args.credentials).read_text().splitlines())
        admin = {"Authorization": f"Bearer {creds['token']}"}
        summary = _fuzz(args.url.rstrip("/"), admin, args)
    else:
        from cvops.testing.gateway_process import GatewayProcess

        with tempfile.TemporaryDirectory(prefix="cvops-fuzz-") as home:
            # no registry runs: an upload's verdict wait ends at once (202 pending)
            gateway = GatewayProcess(Path(home), upload_verdict_timeout_s=0.2)
            with gateway:
                summary = _fuzz(gateway.url, gateway.admin_headers(), args)
                log = gateway.log.read_text(errors="replace")
            if "Traceback" in log:
                summary.errors.append("the gateway's log has a traceback:\n" + log[-4000:])
    if args.json:
        print(json.dumps(summary.as_json(), indent=2))
    else:
        print_summary(summary)
    return 0 if summary.ok else 1


def _fuzz(url: str, admin: dict[str, str], args: argparse.Namespace) -> Summary:
    identity = fuzz_user(url, admin)
    summary = run(
        url,
        identity,
        cases=args.cases,
        seed=args.seed,
        request_timeout=args.request_timeout,
        phases=args.phases,
        checks=args.checks,
    )
    with httpx.Client(base_url=url, timeout=30) as client:
        if client.get("/auth/me", headers=identity.headers).status_code != 200:
            summary.errors.append("the fuzzer's own token stopped working during the run")
    return summary


if __name__ == "__main__":
    sys.exit(main())
