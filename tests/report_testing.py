"""Shared checks of written reports."""

import numpy as np

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png_with_content(path: str, *, min_colours: int = 8) -> np.ndarray:
    """Fails unless ``path`` is a PNG whose pixels are not (nearly) one flat colour: an empty
    figure or a failed draw would pass a file-size check, not this one. Returns the image."""
    import matplotlib.image

    with open(path, "rb") as f:
        assert f.read(8) == _PNG_MAGIC, f"{path} is not a PNG"
    image = matplotlib.image.imread(path)
    colours = np.unique(image.reshape(-1, image.shape[-1]).round(3), axis=0)
    assert len(colours) >= min_colours, f"{path} has only {len(colours)} colours: nothing drawn"
    return image
