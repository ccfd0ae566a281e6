"""Rows out of the user's files, streamed: each one a `Request` to send or a `RowError`.

Takes a path (JSONL plain/.gz/.zst, Parquet) and the rows to skip; gives `Request`s and
`RowError`s in file order with stable row numbers, plus cheap passes for ids and counts.
Never holds the whole file in memory, never sends or writes results: a bad row becomes a
`RowError` with its line number, and only a file that cannot be read at all raises `InputError`.
"""
