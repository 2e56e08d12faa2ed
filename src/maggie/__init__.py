"""MaGGIe: mask-guided gradual human instance matting in pure PyTorch."""
