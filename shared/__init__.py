__version__ = "0.1.0"  # reported by /api/health; keep equal to pyproject.toml
