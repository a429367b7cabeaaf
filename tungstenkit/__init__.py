"""Tungstenkit: define a model in Python and serve it over REST.

This import stays light: it pulls in pydantic, never starlette, uvicorn, redis or torch.
"""

from tungstenkit._base_io import BaseIO, Field, Option
from tungstenkit._files import Audio, Binary, Image, Video
from tungstenkit._masked_image import MaskedImage
from tungstenkit._model import define_model

__version__ = "0.3.0"

__all__ = [
    "Audio",
    "BaseIO",
    "Binary",
    "Field",
    "Image",
    "MaskedImage",
    "Option",
    "Video",
    "__version__",
    "define_model",
]
