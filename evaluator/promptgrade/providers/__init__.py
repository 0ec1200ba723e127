"""Model providers: one small async protocol, so the runner and the Lambda never care which API answers."""

from promptgrade.providers.base import (
    Completion,
    CompletionRequest,
    ErrorInfo,
    ErrorKind,
    GenerationSettings,
    ImageInput,
    Part,
    Provider,
    TextPart,
)

__all__ = [
    "Completion",
    "CompletionRequest",
    "ErrorInfo",
    "ErrorKind",
    "GenerationSettings",
    "ImageInput",
    "Part",
    "Provider",
    "TextPart",
]
