"""Lexical stage: word n-gram shingles, MinHash/LSH near-duplicates, exact n-gram
containment and hashed n-gram distributions, with their indexes on disk (``index``: built in
memory; ``sharded``: the same indexes out of core from a sharded corpus, on an engine). Knows
nothing of embeddings."""
