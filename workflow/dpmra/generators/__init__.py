"""Generators: the networks, the WGAN family's trainer and stage, and the interface every family keeps.

Interface (`dpmra.generators.interface`): a family trains on a training set into generator.pt and epochs.tsv;
anything above samples a generator.pt through the interface, never through a family's trainer.
"""
