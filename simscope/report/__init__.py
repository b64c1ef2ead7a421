"""Report stage: one self-contained HTML file with the decision, plots and evidence."""
