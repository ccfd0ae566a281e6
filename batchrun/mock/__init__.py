"""An OpenAI-compatible mock server for batchrun's demo, tests and benchmarks.

    from batchrun.mock import MockConfig, MockServer

    with MockServer(MockConfig(latency_ms=20, rpm=600, faults={"500": 0.05})) as server:
        server.base_url        # "http://127.0.0.1:PORT/v1"
        server.stats()         # the same counters as GET /mock/stats
        server.set_faults({"429": 0.2})
        server.go_down(5.0)    # connection refused for 5 s, then back on the same port

Endpoints: POST /v1/chat/completions, POST /v1/embeddings, GET /v1/models, the one-api billing
pair GET /v1/dashboard/billing/{subscription,usage}, and for tests GET /mock/stats and
POST /mock/reset. Everything else is an OpenAI-style 404.

A request body can ask for its own failure: `"mock_fault": "<kind>"` (one of FAULT_KINDS), with
`"mock_fault_times": k` to fail only the first k times that exact body is sent. A body's
`"mock_reply_tokens": k` sets the reply length, `"mock_echo": true` makes the reply repeat the
last user message (`MockConfig(echo=True)`: every reply). `MockConfig(exact_tokens=True)` counts
prompt tokens with the tokenizers `batchrun estimate` uses.

Modules: `http` (the asyncio protocol), `app` (routing, auth, limits, faults, counters),
`payloads` (response shapes and token estimates), `ratelimit`, `faults`, `config`, `server`
(thread and loop plumbing), `cli_args` (flags and `python -m batchrun.mock`).
"""

from batchrun.mock.config import DEFAULT_MODELS, MockConfig
from batchrun.mock.faults import FAULT_KINDS
from batchrun.mock.ratelimit import format_go_duration
from batchrun.mock.server import MockServer, serve

__all__ = [
    "DEFAULT_MODELS",
    "FAULT_KINDS",
    "MockConfig",
    "MockServer",
    "format_go_duration",
    "serve",
]
