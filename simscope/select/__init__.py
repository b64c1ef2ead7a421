"""Select stage: a cross-validated model over similarity, public benchmarks and measured RM
results that ranks untried candidates and says how sure it is."""
