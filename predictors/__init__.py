"""Latency (and accuracy) predictors: encodings in, milliseconds out. Imports nothing else of hwnas."""
