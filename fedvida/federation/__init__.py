"""fedvida.federation"""
