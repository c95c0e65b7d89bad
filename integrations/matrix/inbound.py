"""What the Matrix channel reads out of a sync: which timeline events are new to us, who
invited us, and the messages addressed to us (as :class:`InboundMessage`)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from nio import (
    AsyncClient,
    InviteMemberEvent,
    ReactionEvent,
    RoomGetEventResponse,
    RoomMemberEvent,
    RoomMessageText,
)
from nio.rooms import MatrixRoom

from integrations.base import ApprovalAnswer, InboundMessage
from integrations.matrix.events import (
    APPROVAL_KEY,
    CHANNEL,
    addressed_text,
    is_edit,
    reaction_vote,
    thread_of,
)


class Prompts:
    """Our recent approval prompts: event id -> approval id (the oldest forgotten first)."""

    def __init__(self, size: int = 1000) -> None:
        self._ids: OrderedDict[str, str] = OrderedDict()
        self._size = size

    def get(self, event_id: str) -> str | None:
        return self._ids.get(event_id)

    def add(self, event_id: str, approval_id: str) -> None:
        self._ids[event_id] = approval_id
        while len(self._ids) > self._size:
            self._ids.popitem(last=False)


def fresh_events(events: list[Any], me: str) -> list[Any]:
    """The events after our own invite (or join) when the batch has one: a room we just
    joined shows its history, of which only what came since we were invited is for us."""
    cut = 0
    for index, event in enumerate(events):
        if isinstance(event, RoomMemberEvent) and event.state_key == me:
            fresh_join = event.membership == "join" and event.prev_membership != "join"
            if event.membership == "invite" or (fresh_join and cut == 0):
                cut = index + 1
    return events[cut:]


def inviter_of(invite_state: list[Any], me: str) -> str | None:
    """Who invited us, from a room's ``invite_state``."""
    for event in invite_state:
        if (
            isinstance(event, InviteMemberEvent)
            and event.state_key == me
            and event.membership == "invite"
        ):
            return str(event.sender)
    return None


def inbound_message(room: MatrixRoom, event: RoomMessageText, me: str) -> InboundMessage | None:
    """The message for the sink, or None: edits, and in rooms of more than two members
    messages that do not mention us (the mention is stripped from those that do)."""
    content: dict[str, Any] = event.source.get("content", {})
    if is_edit(content):
        return None  # an edit of an earlier message: the original was handled already
    direct = room.member_count <= 2
    text: str | None = event.body
    if not direct:
        names = [name for name in (room.user_name(me), localpart(me)) if name]
        text = addressed_text(event.body, content, me, names)
    if not text:
        return None
    return InboundMessage(
        channel=CHANNEL,
        sender_id=event.sender,
        sender_name=room.user_name(event.sender) or event.sender,
        room=room.room_id,
        text=text,
        thread=thread_of(content),
        direct=direct,
        message_id=event.event_id,
    )


async def approval_answer(
    client: AsyncClient, room: MatrixRoom, event: ReactionEvent, prompts: Prompts
) -> ApprovalAnswer | None:
    """The answer a 👍 / 👎 (or ✅ / ❌) reaction on one of our prompts gives, else None.
    A prompt we do not remember (a restart) is read back: its content carries the id."""
    vote = reaction_vote(event.key)
    if vote is None:
        return None
    approval_id = prompts.get(event.reacts_to)
    if approval_id is None:
        response = await client.room_get_event(room.room_id, event.reacts_to)
        if not isinstance(response, RoomGetEventResponse):
            return None
        found = response.event.source.get("content", {}).get(APPROVAL_KEY)
        if response.event.sender != client.user_id or not isinstance(found, str):
            return None
        approval_id = found
        prompts.add(event.reacts_to, approval_id)
    return ApprovalAnswer(
        channel=CHANNEL,
        approval_id=approval_id,
        approved=vote,
        user_id=event.sender,
        user_name=room.user_name(event.sender) or event.sender,
    )


def localpart(user_id: str) -> str:
    """``bot`` for ``@bot:example.org``."""
    return user_id[1:].split(":", 1)[0] if user_id.startswith("@") else user_id
