"""The command line: `iwsft` and one module per command family."""
