"""Stage 3: ``Spec`` to the one IR (ir): arguments bound against signatures (bind), shapes inferred and checked for the
model (model) and the data, loss, optimizer and training sections (training).
"""
