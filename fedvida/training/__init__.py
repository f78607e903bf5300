"""fedvida.training"""
