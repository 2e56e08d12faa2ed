"""MaGGIe: mask-guided gradual human instance matting in pure PyTorch."""

__all__ = ["Predictor"]


def __getattr__(name: str):
    # Lazy, so that `import maggie.data...` in the data stages does not load the network.
    if name == "Predictor":
        from .predictor import Predictor

        return Predictor
    raise AttributeError(name)
