"""Rows out of the user's files, streamed: each one a `Request` to send or a `RowError`.

Takes a path (JSONL plain/.gz/.zst, Parquet; with a template also CSV / TSV and records of any
columns) and the rows to skip; gives `Request`s and `RowError`s in file order with stable row
numbers, plus cheap passes for ids and counts. Never holds the whole file in memory, never sends
or writes results: a bad row becomes a `RowError` with its line number, and only a file that
cannot be read at all raises `InputError`.

    reader    request files (Batch API lines, bare bodies, a Parquet 'body' column)
    tables    records (CSV, TSV, JSONL objects, Parquet of any columns) under a template
    template  the template: loaded and compiled once, one row rendered into one body
    rows      what they share: ParsedRow, InputError, opening files, the body checks
    idcheck   row count and duplicate ids in bounded memory
"""
