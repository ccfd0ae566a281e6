"""One request, sent well: the HTTP engines, retries, the shared rate limiter, the outage clock.

Takes a `Request` and gives its final `Record` (ok or error), or raises `FatalRunError` when the
failure concerns the whole run. Owns every socket batchrun opens for rows and every decision to
wait or retry. Never reads input files, never writes under OUT, never decides when a run ends:
it reports, and the run decides.
"""
