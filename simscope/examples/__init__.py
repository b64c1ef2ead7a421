"""The bundled example: real data, known mixtures, and `simscope demo`."""
