"""Segmentation: the U-Net, its training, whole-volume prediction and the segmentation metrics."""
