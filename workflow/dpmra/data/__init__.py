"""Data stage: patient tables, NIfTI volumes, the phantom, preparation, patches and the training set."""
