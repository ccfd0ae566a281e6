"""Running a job: the stages wired into one pool, and everything around it.

Takes a `RunConfig`; gives a `RunSummary` and, under OUT, what store wrote. Owns the order of
things (prepare the output, the first pass, the quota, then reader -> workers -> writer), the
task group every task lives in, the stop and grace rules, the progress bar and the text printed
at the end. The one package that may import every other; nothing below it imports it.

Named `runner`, not `run`: `batchrun.run` is the public function, and a package of that name
would shadow it or be shadowed by it depending on import order.
"""
