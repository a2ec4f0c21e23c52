"""The example project's own package: model and data, imported by train.py."""
