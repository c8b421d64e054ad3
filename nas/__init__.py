"""What ties search spaces, devices and predictors together: profiling, search, the CLI."""
