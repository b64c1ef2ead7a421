"""Overlap stage: run the lexical and semantic scorers for every (model, slice, topic) and
write the long Profile table with bootstrap confidence intervals."""
