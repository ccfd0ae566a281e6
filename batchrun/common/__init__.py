"""What several stages share, below all of them: small values and rules with no stage logic.

- `version`: the package version (the User-Agent, `batchrun --version`).
- `secrets`: scrubbing the API key out of anything stored or shown (DESIGN invariant 7).
- `urls`: joining a base URL and an endpoint path.
- `errors`: `FatalRunError`, the failure that stops a whole run (a refused key, no quota).
- `ranges`: `RangeSet`, row numbers as merged ranges (done rows, rows to skip).

Imports nothing else from batchrun; every other package may import it.
"""
