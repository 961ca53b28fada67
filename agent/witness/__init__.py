"""A C2SP tlog-witness: the server (``chaperone witness serve``), its state, and the client the agent uses.

See ``agent.witness.server``, ``agent.witness.state``, ``agent.witness.client``
and ``agent.witness.protocol``.
"""

from agent.witness.client import (
    AddResult,
    Conflict,
    Cosigned,
    Failed,
    Refused,
    WitnessClient,
)
from agent.witness.pool import PushResult, WitnessPool
from agent.witness.state import WitnessState, init_witness, load_witness

__all__ = [
    "AddResult",
    "Conflict",
    "Cosigned",
    "Failed",
    "PushResult",
    "Refused",
    "WitnessClient",
    "WitnessPool",
    "WitnessState",
    "init_witness",
    "load_witness",
]
