"""What each endpoint family looks like on the wire: its request's shape, its answer, its usage.

Takes a request body or a response body (plain JSON values) and gives figures: the token charge
the limiter reserves before sending, the usage a response reports. Holds no state, does no I/O
and knows nothing of files, retries or the run: every stage that needs to understand an endpoint
asks here, so that adding a family touches this package only.
"""
