"""reference_models package."""
