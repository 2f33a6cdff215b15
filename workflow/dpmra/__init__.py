"""dpmra: differentially private synthetic TOF-MRA patches with vessel labels."""

__version__ = "0.1.0"
