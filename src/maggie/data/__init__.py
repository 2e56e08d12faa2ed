"""Datasets: procedural assets, synthesis of the four MaGGIe datasets, simulated guidance masks."""
