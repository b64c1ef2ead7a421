"""Semantic stage: sentence embeddings, their cache, FAISS indexes, distribution coverage
metrics and topics of the preference data. Knows nothing of n-grams."""
