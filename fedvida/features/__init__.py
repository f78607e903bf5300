"""fedvida.features"""
