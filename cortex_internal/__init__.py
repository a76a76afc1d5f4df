"""Compatibility package: the import paths Cortex predictors use."""
