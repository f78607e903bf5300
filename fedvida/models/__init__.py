"""fedvida.models"""
