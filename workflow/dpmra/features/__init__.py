"""Image features for Frechet distances and t-SNE (Inception-v3 or a random CNN), below release and evaluation.

Its own small subpackage, not part of evaluation: the release (`dpmra.release.synth`, checkpoint choice by
`val_fd`) and the quality stage both compute Frechet distances, and the release sits below evaluation.
"""
