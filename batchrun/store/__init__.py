"""Everything on disk under OUT: result part files, the checkpoint, the output lock.

Takes `Record`s and gives an ordinary Parquet dataset plus a checkpoint that says which rows are
done. Only store writes under OUT (other stages hand it bytes or records); every write is atomic
(temporary name, fsync, rename, fsync the directory), so a crash at any instant leaves a state a
resume can trust. Never sends requests and never reads the input's rows.
"""
