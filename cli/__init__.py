"""The `hwnas` command line (installed as the `hwnas_cli` package)."""
