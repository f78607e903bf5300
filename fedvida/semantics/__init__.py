"""fedvida.semantics"""
