"""Given a prompt that shows reference images, when any provider sends it, then its server receives every
image and every text in the declared order — references, then the tray — and bills each image; and a
request without references is sent exactly as before (the tray, then the text).

Run for each provider record by the ``served`` fixture (tests/provider_servers.py).
"""

from __future__ import annotations

import asyncio

from helpers.provider_servers import ServedProvider
from promptgrade.providers import CompletionRequest, ImageInput, TextPart


def image(n: int) -> ImageInput:
    return ImageInput(
        data=b"\xff\xd8\xff\xe0" + bytes([n]) * 300 + n.to_bytes(4, "big"), mime_type="image/jpeg"
    )


def send(served: ServedProvider, request: CompletionRequest) -> None:
    provider = served.provider()

    async def go() -> None:
        try:
            await provider.complete(request)
        finally:
            await provider.aclose()

    asyncio.run(go())


def test_references_arrive_before_the_tray_in_the_declared_order(served: ServedProvider) -> None:
    references, tray = [image(1), image(2), image(3)], image(9)
    parts = (
        TextPart("Reference trays:\n"),
        references[0],
        TextPart("0% left\n"),
        references[1],
        TextPart("50% left\n"),
        references[2],
        TextPart("Now this one:\n"),
        tray,
        TextPart("Answer in JSON.\n"),
    )
    text = "".join(p.text for p in parts if isinstance(p, TextPart))

    send(served, CompletionRequest(prompt=text, image=tray, parts=parts))

    [received] = served.server.requests
    assert list(received.image_sha256s) == [*(r.sha256 for r in references), tray.sha256]
    assert received.image_sha256 == tray.sha256  # the tray is the last image
    for part in parts:
        if isinstance(part, TextPart):
            assert part.text in received.prompt
    order = getattr(received, "content_order", None)
    if order is not None:  # Converse blocks / Chat Completions parts, in the order sent
        assert [kind for kind in order if kind != "text"] == [order[1]] * 4
        assert order[0] == "text" and order[-1] == "text"


def test_a_request_without_references_is_the_tray_then_the_text(served: ServedProvider) -> None:
    tray = image(7)

    send(served, CompletionRequest(prompt="Grade this tray.", image=tray))

    [received] = served.server.requests
    assert list(received.image_sha256s) == [tray.sha256]
    order = getattr(received, "content_order", None)
    if order is not None:
        assert order[-1] == "text" and len(order) == 2
