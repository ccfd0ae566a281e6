"""The same job on a Ray cluster: shards sent by actors that each run the local pool.

Takes a `RunConfig` and a Ray address; gives a `RunSummary` over every shard. Owns the plan of
shards (`OUT/cluster.json`), the actors (one shared budget, N shard workers), the budget's
leases and the shared pause, re-running a shard whose worker died, and copying a shard's
commits to an object store. Each shard is a local run (`batchrun.runner.pipeline.run`) on its
rows, with its own output in `OUT/shards/<id>/`. Nothing outside this package imports Ray, and
a local run never imports this package.
"""
