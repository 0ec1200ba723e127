"""The SDK's request conversion, done once per prompt and settings instead of once per call.

``client.aio.models.generate_content`` turns its pydantic arguments into the REST body on every call:
a deep copy of the config, a pydantic model of the parameters, and a walk of every field through
``_common`` converters — about 2.5 ms of CPU per request on this machine, most of what one event loop
spends per call (benchmarks/throughput.py). In a sweep, every request of a candidate differs only in
its image bytes. So the first request of each (prompt, settings, schema, image type) is converted by
the SDK's own converters, with a sentinel image; later requests copy that body with their image's
base64 put where the sentinel's was. The bytes sent are therefore exactly what the SDK would send
(a test compares them at the server), and the answer is read by the SDK's own response converters
into the same ``GenerateContentResponse``.

The converters used here are module-private in google-genai. If a release renames them, building a
template fails and the provider falls back, once and for good, to the public ``generate_content``:
slower, never wrong.
"""

from __future__ import annotations

import base64
import json
import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from google.genai import _common, models, types

from promptgrade.providers.base import CompletionRequest, TextPart

_MAX_TEMPLATES = 64  # candidates per sweep are few; a bound keeps a long-lived Lambda's memory flat


@dataclass(frozen=True, slots=True)
class _Template:
    path: str
    body: dict[str, Any]
    image_path: tuple[str | int, ...]  # where the image's base64 string sits in ``body``
    parameters: Any  # the SDK's _GenerateContentParameters, which its response converters take
    response_kwargs: dict[str, Any]

    def fill(self, data: bytes) -> dict[str, Any]:
        """A copy of the body with this image: only the containers on the image's path are copied,
        the rest is shared (nothing downstream mutates it — the SDK only drops top-level ``_`` keys)."""
        encoded = base64.urlsafe_b64encode(data).decode("ascii")  # as _common.encode_unserializable_types
        root = dict(self.body)
        node: Any = root
        for step in self.image_path[:-1]:
            child = node[step]
            child = dict(child) if isinstance(child, dict) else list(child)
            node[step] = child
            node = child
        node[self.image_path[-1]] = encoded
        return root


class RequestTemplates:
    """Bodies for ``generateContent`` by the SDK's own conversion, cached per prompt and settings."""

    def __init__(self, api_client: Any, model: str) -> None:
        self._api = api_client
        self._model = model
        self._templates: OrderedDict[tuple[Any, ...], _Template] = OrderedDict()

    def request(
        self, request: CompletionRequest, config: types.GenerateContentConfig, key: tuple[Any, ...]
    ) -> _Template:
        """The template for ``request``'s prompt (``key`` names it: see ``template_key``). A prompt's
        reference images are in the template itself, so a call copies only its tray's base64."""
        template = self._templates.get(key)
        if template is None:
            template = self._build(request, config)
            self._templates[key] = template
            if len(self._templates) > _MAX_TEMPLATES:
                self._templates.popitem(last=False)
        else:
            self._templates.move_to_end(key)
        return template

    def _build(self, request: CompletionRequest, config: types.GenerateContentConfig) -> _Template:
        """Mirrors ``AsyncModels._generate_content`` up to the HTTP call, with a sentinel tray."""
        sentinel = os.urandom(24)
        contents = sdk_parts(request, tray=sentinel)
        parameters = types._GenerateContentParameters(model=self._model, contents=contents, config=config)
        convert = (
            models._GenerateContentParameters_to_vertex
            if self._api.vertexai
            else models._GenerateContentParameters_to_mldev
        )
        request_dict = convert(self._api, parameters, None, parameters)
        url = request_dict.get("_url")
        path = "{model}:generateContent".format_map(url) if url else "{model}:generateContent"
        if query := request_dict.get("_query"):
            path = f"{path}?{urlencode(query)}"
        request_dict.pop("config", None)
        request_dict = _common.encode_unserializable_types(_common.convert_to_dict(request_dict))
        for key in [k for k in request_dict if k.startswith("_")]:
            del request_dict[key]  # what the SDK's _build_request drops; done once here
        marker = base64.urlsafe_b64encode(sentinel).decode("ascii")
        image_path = _find(request_dict, marker)
        if image_path is None:
            raise LookupError("the image is not where google-genai's converter used to put it")
        response_kwargs = {
            "config": {
                "response_schema": getattr(parameters.config, "response_schema", None),
                "response_json_schema": getattr(parameters.config, "response_json_schema", None),
                "include_all_fields": getattr(parameters.config, "include_all_fields", None),
            }
        }
        return _Template(path, request_dict, image_path, parameters, response_kwargs)

    def parse(self, template: _Template, body: str | None) -> types.GenerateContentResponse:
        """The SDK's own reading of a response: the same object ``generate_content`` returns."""
        response_dict = json.loads(body) if body else {}
        convert = (
            models._GenerateContentResponse_from_vertex
            if self._api.vertexai
            else models._GenerateContentResponse_from_mldev
        )
        response_dict = convert(response_dict, None, template.parameters)
        return types.GenerateContentResponse._from_response(
            response=response_dict, kwargs=template.response_kwargs
        )


def sdk_parts(request: CompletionRequest, tray: bytes | None = None) -> list[types.PartUnion]:
    """The request's sequence as the SDK's parts (the tray's bytes replaced by ``tray`` if given)."""
    parts: list[types.PartUnion] = []
    for part in request.content():
        if isinstance(part, TextPart):
            parts.append(types.Part.from_text(text=part.text))
        else:
            data = tray if tray is not None and part is request.image else part.data
            parts.append(types.Part.from_bytes(data=data, mime_type=part.mime_type))
    return parts


def template_key(request: CompletionRequest, settings_key: tuple[Any, ...]) -> tuple[Any, ...]:
    """What a template depends on besides the tray's bytes: the prompt, the tray's type, the
    settings, and — for a prompt with reference images — the sequence, images by sha256."""
    layout = tuple(
        part.text if isinstance(part, TextPart) else ("tray" if part is request.image else part.sha256)
        for part in request.parts
    )
    return (request.prompt, request.image.mime_type, *settings_key, *layout)


def _find(node: Any, marker: str, trail: tuple[str | int, ...] = ()) -> tuple[str | int, ...] | None:
    if isinstance(node, dict):
        items: Any = node.items()
    elif isinstance(node, list):
        items = enumerate(node)
    else:
        return trail if node == marker else None
    for key, value in items:
        if (found := _find(value, marker, (*trail, key))) is not None:
            return found
    return None
