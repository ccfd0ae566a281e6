"""batchrun's benchmarks (issue 5): `make bench` or `python -m tests.bench`; not in `make test`.

    overhead     batchrun end to end vs a bare aiohttp loop, same server, same concurrency
                 (plus one bare httpx2 loop run as a reference)
    concurrency  2,000 in flight against 1 s of latency, 20,000 rows (6,000 with --quick):
                 steady req/s while 10%-90% were answered (ideal: 2,000 req/s)
    memory       peak RSS at 100k and 1M rows (20k and 200k with --quick)
    limits       --rpm 600 and --tpm 60000 against a mock enforcing the same, >= 60 s each
    resume       a 1M-row run 90% done: start to first request
    estimate     rows/s of `batchrun estimate` on 1M chat rows (if the command exists)

Everything talks to the built-in mock server on 127.0.0.1, in its own process on its own core;
every run is bounded by a count and a timeout; children and temp files are removed on any exit.
Progress goes to stderr, one table to stdout at the end (and JSON with --json PATH).
"""
