"""``MaskedImage``: an image and a mask of the same size, for inpainting-style inputs."""

from __future__ import annotations

from typing import Any

import pydantic
from pydantic import ConfigDict, PrivateAttr, ValidationInfo, model_validator

from tungstenkit._errors import FileInputError, InvalidFileContent
from tungstenkit._files import DEFER_DECODING, FILE_POLICY, FilePolicy, Image, file_error
from tungstenkit._media import binarize_mask


class MaskedImage(pydantic.BaseModel):
    """An input given as ``{"image": ..., "mask": ...}``, each part a file input (data URI, base64, URL).

    The mask must have the image's size. The model receives it binarised: mode ``L``,
    every non-zero pixel 255, as a PNG.
    """

    model_config = ConfigDict(json_schema_extra={"x-tungsten-file": "masked_image"})

    image: Image
    mask: Image
    _binarized: bool = PrivateAttr(default=False)

    @model_validator(mode="after")
    def _check(self, info: ValidationInfo) -> MaskedImage:
        if self.image.is_remote or self.mask.is_remote:
            return self  # checked once downloaded, before predict
        context: dict[str, Any] = info.context or {}
        try:
            self.finish(context.get(FILE_POLICY) or FilePolicy(), decode=not context.get(DEFER_DECODING))
        except FileInputError as exc:
            raise file_error(exc) from None
        return self

    @property
    def ready(self) -> bool:
        """Whether the mask has been checked and binarised."""
        return self._binarized

    def finish(self, policy: FilePolicy, decode: bool = True) -> None:
        """Check the sizes and, with ``decode``, binarise the mask (once both parts are local)."""
        if self._binarized:
            return
        width, height = self.image.size_within(policy)
        if decode:
            binary, (mask_width, mask_height) = binarize_mask(self.mask.read_bytes(), policy.max_image_pixels)
        else:
            mask_width, mask_height = self.mask.size_within(policy)
        if (mask_width, mask_height) != (width, height):
            raise InvalidFileContent(
                f"the mask is {mask_width}x{mask_height} but the image is {width}x{height}; they must be the same size",
                field="mask",
            )
        if decode:
            mask = Image.from_bytes(binary, "image/png")
            mask._size = (mask_width, mask_height)
            self.mask = mask
            self._binarized = True
