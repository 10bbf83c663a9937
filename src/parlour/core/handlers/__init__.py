"""Request handlers of the chat core, one module per feature.

Each handler is a function ``(cx: Ctx, c: Connection, request) -> Outcome``; the dispatch
table is in ``parlour.core.service``. Handlers ask for every need before they change state
(``parlour.core.needs``).
"""
