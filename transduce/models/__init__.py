"""Model families: a config dataclass and a build() per file."""
