"""What runs after validation: ``train``/``eval``/``predict`` runs and their folders (runs), the proof that both
backends agree (check), torchrun (launch), loss plots (plot).
"""
