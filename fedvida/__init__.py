"""fedvida: federated generation of missing audio features from video for action recognition."""

__version__ = "0.1.0"
