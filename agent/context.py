"""Context management with the backend's tokenizer: prune old tool outputs first, then summarize older turns.

Nothing is dropped silently: every compaction is reported to the listener, and when even a summary does not fit
the session stops with a clear reason. Compaction rewrites the history once, giving a new stable prefix."""
from __future__ import annotations

from typing import Any

from agent.chat_format import render_conversation

KEEP_RECENT_TOOL_OUTPUTS = 4  # the newest tool results always stay verbatim
KEEP_RECENT_MESSAGES = 6  # messages kept after a summary
PRUNED_NOTE = "[output pruned to save context: {lines} lines from {name}; call the tool again if you need it]"
SUMMARY_REQUEST = (
    "Summarize the conversation so far for your own later use: the task, what you found (files, functions, "
    "causes), what you changed, what remains to do. Be specific and brief. Reply with the summary only, no tool call."
)


class ContextManager:
    """Keeps a session's prompt under `limit` tokens, leaving room for one model turn of `reserve` tokens."""

    def __init__(self, limit: int, reserve: int):
        self.limit = limit
        self.reserve = reserve

    def count(self, session: Any, messages: list[dict[str, Any]] | None = None) -> int:
        text = render_conversation(session.messages if messages is None else messages, session.declarations)
        return session.backend.count_tokens(text)

    def fit(self, session: Any) -> str | None:
        """Compact if needed before the next turn. Returns a reason when the context cannot be made to fit."""
        if self.count(session) + self.reserve <= self.limit:
            return None
        return self.compact(session)

    def compact(self, session: Any) -> str | None:
        before = self.count(session)
        pruned = prune_tool_outputs(session.messages)
        if pruned is not None and self.count(session, pruned) + self.reserve <= self.limit:
            session.messages = pruned
            session.listener.on_notice(f"context compacted: old tool outputs pruned ({before} -> "
                                       f"{self.count(session)} tokens)")
            return None
        summarized = self.summarize(session, pruned or session.messages)
        if summarized is None:
            return f"the conversation ({before} tokens) does not fit the {self.limit}-token context and cannot be summarized"
        session.messages = summarized
        after = self.count(session)
        session.listener.on_notice(f"context compacted: older turns summarized by the model ({before} -> {after} tokens)")
        if after + self.reserve > self.limit:
            return f"even after summarizing, the conversation needs {after} tokens (context limit {self.limit})"
        return None

    def summarize(self, session: Any, messages: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
        split = _summary_split(messages)
        if split is None:
            return None
        head, tail = messages[:split], messages[split:]
        request = self._summary_request(session, head)
        if request is None:
            return None
        from agent.backends import BackendError

        try:
            completion = session.backend.complete(request, session.declarations, max_tokens=self.reserve,
                                                  on_text=lambda text: None)
        except BackendError:
            return None
        summary = completion.text
        if not summary:
            return None
        task = next((m["content"] for m in head[1:] if m["role"] == "user"), "")
        if session.backend.count_tokens(task) > self.limit // 4:
            task = "(long; restated in the summary)"
        note = f"Earlier turns were summarized to fit the context.\nOriginal request:\n{task}\n\nSummary:\n{summary}"
        return [messages[0], {"role": "user", "content": note}, *tail]

    def _summary_request(self, session: Any, head: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
        """The head plus the summary instruction; long messages are visibly shortened until it fits."""
        ending = [{"role": "user", "content": SUMMARY_REQUEST}]
        if head[-1]["role"] == "tool":
            ending.insert(0, {"role": "assistant", "content": ""})  # close the model turn first
        cap = max((len(str(m.get("content") or "")) + len(str(m.get("tool_calls") or "")) for m in head[1:]), default=0)
        while True:
            request = [head[0], *(_shorten(m, cap) for m in head[1:]), *ending]
            if self.count(session, request) + self.reserve <= self.limit:
                return request
            if cap < 200:
                return None
            cap //= 2


def _cut(text: str, cap: int) -> str:
    if len(text) <= cap:
        return text
    half = cap // 2
    return f"{text[:half]}[... {len(text) - 2 * half} characters omitted ...]{text[-half:]}"


def _shorten(message: dict[str, Any], cap: int) -> dict[str, Any]:
    """A copy with long contents and long string arguments of tool calls visibly cut to about `cap` characters."""
    result = {**message, "content": _cut(message.get("content") or "", cap)}
    if message.get("tool_calls"):
        result["tool_calls"] = [
            {**call, "arguments": {k: _cut(v, cap) if isinstance(v, str) else v for k, v in call["arguments"].items()}}
            for call in message["tool_calls"]
        ]
    return result


def prune_tool_outputs(messages: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """A copy with all but the newest tool results replaced by a short note; None if nothing could be pruned."""
    tool_indexes = [i for i, m in enumerate(messages) if m["role"] == "tool"]
    old = tool_indexes[:-KEEP_RECENT_TOOL_OUTPUTS] if len(tool_indexes) > KEEP_RECENT_TOOL_OUTPUTS else []
    result, changed = list(messages), False
    for i in old:
        content = messages[i]["content"]
        if content.startswith("[output pruned"):
            continue
        note = PRUNED_NOTE.format(lines=content.count("\n") + 1, name=messages[i].get("name", "a tool"))
        if len(note) < len(content):
            result[i] = {**messages[i], "content": note}
            changed = True
    return result if changed else None


def _summary_split(messages: list[dict[str, Any]]) -> int | None:
    """Index of the first kept message, leaving about KEEP_RECENT_MESSAGES; never a tool result (it would lose
    the call it answers). Kept assistant turns re-open with a model header after the summary message."""
    for i in range(max(2, len(messages) - KEEP_RECENT_MESSAGES), len(messages)):
        if messages[i]["role"] != "tool":
            return i
    return None
