"""What specc knows about torch without importing it: the registry (the one table of every name a spec may use, with
traits), torch's signatures (torch_facts, written by make_table), and the rules for shapes, parameters and
torchvision arguments.
"""
