"""The `hwnas` command line: nas.cli.main builds it from one module per command group."""
