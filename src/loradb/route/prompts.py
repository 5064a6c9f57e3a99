"""The texts of an OpenAI-style request that `loradb:auto` represents: a completion's prompt
(or prompts), a chat's user messages. The same texts a dataset row would hold, so z is
computed as for the data an adapter was trained on."""

from __future__ import annotations

from loradb.errors import LoradbError

MAX_TEXTS = 256


def request_texts(body: dict) -> list[str]:
    if "messages" in body:
        texts = _chat_texts(body["messages"])
    elif "prompt" in body:
        prompt = body["prompt"]
        texts = [prompt] if isinstance(prompt, str) else prompt
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise LoradbError("loradb:auto represents text: `prompt` must be a string or a list of strings (token ids "
                              "cannot be represented)")
    else:
        raise LoradbError("the request has neither `prompt` nor `messages`")
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise LoradbError("loradb:auto needs text to choose adapters by; the request's prompt is empty")
    if len(texts) > MAX_TEXTS:
        raise LoradbError(f"the request holds {len(texts)} prompts; loradb:auto represents at most {MAX_TEXTS}")
    return texts


def _chat_texts(messages) -> list[str]:
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise LoradbError("`messages` must be a list of {role, content} objects")
    texts = []
    for m in messages:
        if m.get("role") != "user":
            continue
        content = m.get("content")
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):  # content parts: the text ones
            texts += [p["text"] for p in content if isinstance(p, dict) and p.get("type") == "text"
                      and isinstance(p.get("text"), str)]
    if not texts:
        raise LoradbError("loradb:auto represents the user's messages; this chat has no user text")
    return texts
