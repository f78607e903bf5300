"""fedvida.data"""
