"""Command line: argument parsing and YAML loading only; everything else is the library."""
