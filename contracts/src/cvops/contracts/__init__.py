"""cvops-contracts: the only shared vocabulary — events, value types and API bodies."""

from cvops.contracts import conversion, deployment, identity, registry, reporting, training
from cvops.contracts.codec import UnknownEvent, decode, encode, event_types, json_schemas, register
from cvops.contracts.common import ArtifactRef, Lineage, TensorSpec
from cvops.contracts.envelope import (
    SECRET_CONTEXTS,
    SECRET_PREFIX,
    SUBJECT_PREFIX,
    Event,
    Stamp,
    stable_id,
    subject_token,
)

register(*identity.IDENTITY_EVENTS, *registry.REGISTRY_EVENTS)
register(*deployment.DEPLOYMENT_EVENTS)
register(*training.TRAINING_EVENTS)
register(*conversion.CONVERSION_EVENTS)
register(*reporting.REPORTING_EVENTS)

__all__ = [
    "SECRET_CONTEXTS",
    "SECRET_PREFIX",
    "SUBJECT_PREFIX",
    "ArtifactRef",
    "Event",
    "Lineage",
    "Stamp",
    "TensorSpec",
    "UnknownEvent",
    "conversion",
    "decode",
    "deployment",
    "encode",
    "event_types",
    "identity",
    "json_schemas",
    "register",
    "registry",
    "reporting",
    "stable_id",
    "subject_token",
    "training",
]
