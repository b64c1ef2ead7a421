"""Probe stage: turn a candidate model into a ProbeCorpus (sampling it, or importing a corpus
made elsewhere) and score how likely the model finds the team's own texts."""
