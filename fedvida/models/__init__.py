"""Trainable models: generator, classifier and heads in one container (`container.py`)."""
