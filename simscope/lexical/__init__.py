"""Lexical stage: word n-gram shingles, MinHash/LSH near-duplicates, exact n-gram
containment and hashed n-gram distributions, with their indexes on disk. Knows nothing of
embeddings."""
