"""The chat page in headless Chromium against the whole local stack (two gateway nodes)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import socketio
from gateway_node import GatewayNode
from playwright.async_api import Locator, Page, expect

from devstack import Stack
from tests.support import unique_room, until

NewPage = Callable[[str], Awaitable[Page]]
HISTORY_PAGE = 50  # the page's newest page of history

XSS = '<img src=x onerror="window.__pwned = true"><script>window.__pwned = true</script>'

# Remembers whether the page ever showed the rate-limit notice: it lasts only milliseconds.
WATCH_RATE_LIMIT = """() => {
  window.__rateLimitShown = false;
  new MutationObserver(() => {
    for (const e of document.querySelectorAll(".msg .error")) {
      if (e.textContent.startsWith("Too fast")) window.__rateLimitShown = true;
    }
  }).observe(document.getElementById("timeline"), {subtree: true, childList: true});
}"""
# Faster than typing: every message is queued before the first ack returns.
SUBMIT_ALL = """(texts) => {
  const text = document.getElementById("text");
  for (const t of texts) {
    text.value = t;
    document.getElementById("composer").requestSubmit();
  }
}"""


@pytest.fixture
def nodes(full_stack: Stack) -> list[str]:
    """Base URLs of the two gateway nodes, each serving the page itself."""
    urls: list[str] = full_stack.endpoints()["ws_urls"]
    assert len(urls) >= 2, urls
    return urls


async def sign_in(page: Page, user: str) -> None:
    await page.fill("#name", user)
    await page.press("#name", "Enter")
    await expect(page.locator("#status")).to_have_attribute("data-state", "online")


async def join(page: Page, room: str) -> None:
    await page.fill("#join-room", room)
    await page.press("#join-room", "Enter")
    await expect(page.locator(f'#room-list li[data-room="{room}"]')).to_have_class(
        "room-item active"
    )
    await expect(page.locator("#send")).to_be_enabled()


async def open_chat(new_page: NewPage, base_url: str, user: str, room: str) -> Page:
    page = await new_page(base_url + "/")
    await sign_in(page, user)
    await join(page, room)
    return page


async def two_nodes(
    new_page: NewPage, nodes: list[str], first: str, second: str
) -> tuple[str, Page, Page]:
    """A new room with ``first`` on the first gateway node and ``second`` on the second."""
    room = unique_room("web")
    return (
        room,
        await open_chat(new_page, nodes[0], first, room),
        await open_chat(new_page, nodes[1], second, room),
    )


async def say(page: Page, text: str) -> None:
    await page.fill("#text", text)
    await page.press("#text", "Enter")


def messages(page: Page, room: str) -> Locator:
    return page.locator(f'ol[data-room="{room}"] > li.msg')


def confirmed(page: Page, room: str, text: str) -> Locator:
    """The confirmed message whose whole text is ``text``."""
    return (
        messages(page, room)
        .filter(has=page.locator(".text", has_text=text))
        .and_(page.locator('[data-state="confirmed"]'))
    )


async def seqs(page: Page, room: str) -> list[int]:
    values = await messages(page, room).evaluate_all("els => els.map(e => e.dataset.seq)")
    return [int(v) for v in values]


@contextlib.asynccontextmanager
async def socket_as(url: str, user: str) -> AsyncIterator[socketio.AsyncClient]:
    """A plain Socket.IO client, signed in as ``user``."""
    client = socketio.AsyncClient(reconnection=False)
    await client.connect(url, auth={"user": user}, transports=["websocket"], wait_timeout=10)
    try:
        yield client
    finally:
        await client.disconnect()


async def seed(client: socketio.AsyncClient, room: str, count: int) -> None:
    ack: dict[str, Any] = await client.call("join", {"room": room}, timeout=10)
    assert ack["ok"], ack
    for n in range(1, count + 1):
        payload = {"room": room, "text": f"seeded {n}", "client_msg_id": f"seed-{n}"}
        while not (ack := await client.call("send", payload, timeout=10))["ok"]:
            assert ack["error"]["code"] == "rate_limited", ack
            await asyncio.sleep(ack["retry_after_ms"] / 1000)


async def spend_send_budget(url: str, user: str, sockets: int = 6, each: int = 15) -> None:
    """Use up ``user``'s per-user send budget from other sockets, in another room."""
    # Twice the burst (40) plus what refills (20/s) while a loaded machine sends them and the
    # page's burst follows: the budget stays spent for about three seconds, whatever the load.
    room = unique_room("web")

    async def spend(index: int) -> None:
        async with socket_as(url, user) as client:
            await seed(client, room, 0)
            for n in range(each):
                payload = {"room": room, "text": "spent", "client_msg_id": f"spend-{index}-{n}"}
                await client.call("send", payload, timeout=10)

    await asyncio.gather(*(spend(i) for i in range(sockets)))


async def test_two_pages_on_two_nodes_chat(
    new_page: NewPage, nodes: list[str], screenshots: Path
) -> None:
    room, alice, bob = await two_nodes(new_page, nodes, "alice", "bob")

    # WHEN alice sends, her page shows the message at once, before any server round trip ends
    await say(alice, "hello bob, from node one")
    await expect(messages(alice, room)).to_have_count(1)
    await expect(confirmed(alice, room, "hello bob, from node one")).to_have_count(1)
    await expect(confirmed(bob, room, "hello bob, from node one")).to_have_count(1)

    # typing on one node reaches the other
    await bob.locator("#text").press_sequentially("on my w")
    await expect(alice.locator("#typing")).to_have_text("bob is typing…")
    await bob.fill("#text", "")
    await say(bob, "hi alice, node two here")
    await expect(confirmed(alice, room, "hi alice, node two here")).to_have_count(1)
    await expect(alice.locator("#typing")).to_have_text("")

    await say(alice, "line one\nline two")
    await expect(confirmed(bob, room, "line one\nline two")).to_have_count(1)

    # THEN both pages show the same conversation, each message once, in seq order
    expected = ["hello bob, from node one", "hi alice, node two here", "line one\nline two"]
    for page in (alice, bob):
        await expect(messages(page, room).locator(".text")).to_have_text(expected)
        assert await seqs(page, room) == [1, 2, 3]
    await expect(messages(alice, room).and_(alice.locator(".mine"))).to_have_count(2)

    # presence spans both nodes and follows people leaving
    for page in (alice, bob):
        await expect(page.locator("#presence li")).to_have_text(["alice", "bob"])
    await alice.screenshot(path=screenshots / "alice.png")
    await bob.screenshot(path=screenshots / "bob.png")
    await bob.close()
    await expect(alice.locator("#presence li")).to_have_text(["alice"])


async def test_history_is_there_after_reload_and_pages_older_on_scroll_up(
    new_page: NewPage, nodes: list[str], screenshots: Path
) -> None:
    room = unique_room("web")
    async with socket_as(nodes[0], "seeder") as seeder:
        await seed(seeder, room, 70)
    page = await open_chat(new_page, nodes[1], "carol", room)

    # the newest page comes first
    await expect(confirmed(page, room, "seeded 70")).to_have_count(1)
    await expect(messages(page, room)).to_have_count(50)
    assert await seqs(page, room) == list(range(21, 71))

    # scrolling to the top loads the older page, keeping order
    await page.locator("#timeline").evaluate("t => { t.scrollTop = 0; }")
    await expect(messages(page, room)).to_have_count(70)
    assert await seqs(page, room) == list(range(1, 71))

    await say(page, "written before the reload")
    await expect(confirmed(page, room, "written before the reload")).to_have_count(1)

    # WHEN the page reloads, THEN the session, the room and its history come back
    await page.reload()
    await expect(page.locator("#status")).to_have_attribute("data-state", "online")
    await expect(confirmed(page, room, "written before the reload")).to_have_count(1)
    await expect(messages(page, room)).to_have_count(50)
    assert await seqs(page, room) == list(range(22, 72))
    await page.screenshot(path=screenshots / "after-reload.png")


async def test_markup_in_a_message_is_shown_as_text(
    new_page: NewPage, nodes: list[str], screenshots: Path
) -> None:
    room, mallory, dave = await two_nodes(new_page, nodes, "mallory", "dave")

    await say(mallory, XSS)
    for page in (mallory, dave):
        message = confirmed(page, room, XSS)
        await expect(message).to_have_count(1)
        await expect(message.locator(".text")).to_have_text(XSS)
        assert await message.locator(".text *").count() == 0

    # quoted in a reply, it is text too
    await tool(confirmed(dave, room, XSS), "Reply").click()
    await say(dave, "what is this?")
    await expect(confirmed(mallory, room, "what is this?").locator(".quote")).to_contain_text(
        "<img src=x"
    )

    # the history path renders it the same way
    await dave.reload()
    await expect(confirmed(dave, room, XSS)).to_have_count(1)
    for page in (mallory, dave):
        assert await page.locator("#timeline img, #timeline script").count() == 0
        assert await page.evaluate("window.__pwned === undefined")
    await dave.screenshot(path=screenshots / "markup-as-text.png")


async def test_errors_are_shown_inline(new_page: NewPage, nodes: list[str]) -> None:
    room = unique_room("web")
    page = await open_chat(new_page, nodes[0], "erin", room)

    await say(page, "x" * 4001)
    failed = messages(page, room).and_(page.locator('[data-state="failed"]'))
    await expect(failed).to_have_count(1)
    await expect(failed.locator(".error")).to_contain_text("longer than 4000")
    await failed.get_by_role("button", name="Discard").click()
    await expect(messages(page, room)).to_have_count(0)

    # GIVEN erin's send budget is spent elsewhere (it is per user, across sockets and rooms)
    await spend_send_budget(nodes[1], "erin")
    # WHEN she sends a burst, THEN it is held back and retried: every message arrives, in order
    burst = [f"burst {n}" for n in range(1, 11)]
    await page.evaluate(WATCH_RATE_LIMIT)
    await page.evaluate(SUBMIT_ALL, burst)
    confirmed_burst = messages(page, room).and_(page.locator('[data-state="confirmed"]'))
    await expect(confirmed_burst).to_have_count(len(burst))
    await expect(messages(page, room).locator(".text")).to_have_text(burst)
    assert await page.evaluate("window.__rateLimitShown") is True

    await page.fill("#join-room", "no spaces allowed")
    await page.press("#join-room", "Enter")
    await expect(page.locator("#join-error")).to_contain_text("Room names")

    # a private room needs a token that grants it
    await join_refused(page, "private:board")
    await expect(page.locator("#room-note")).to_contain_text("not granted")
    await expect(page.locator('#room-list li[data-room="private:board"]')).to_have_class(
        "room-item active failed"
    )


async def join_refused(page: Page, room: str) -> None:
    await page.fill("#join-room", room)
    await page.press("#join-room", "Enter")
    await expect(page.locator(f'#room-list li[data-room="{room}"]')).to_be_visible()


async def test_token_sign_in_opens_a_granted_private_room(
    full_stack: Stack, new_page: NewPage
) -> None:
    room = f"private:{uuid.uuid4().hex[:10]}"
    secret = full_stack.endpoints()["jwt_secret"]
    token = jwt.encode(
        {"sub": "frank", "rooms": [room], "exp": int(time.time()) + 600}, secret, "HS256"
    )
    # through the load balancer, as a person opening the printed URL would
    page = await new_page(full_stack.endpoints()["web_url"])
    await page.fill("#token", token)
    await page.click("#sign-in-form button[type=submit]")
    await expect(page.locator("#status")).to_have_attribute("data-state", "online")
    await expect(page.locator("#whoami")).to_have_text("frank")

    await join(page, room)
    await say(page, "only for the board")
    await expect(confirmed(page, room, "only for the board")).to_have_count(1)
    await page.reload()
    await expect(confirmed(page, room, "only for the board")).to_have_count(1)

    # a refused token sends the page back to sign-in with the reason
    await page.get_by_role("button", name="Sign out").click()
    await page.fill("#token", "not-a-jwt")
    await page.click("#sign-in-form button[type=submit]")
    await expect(page.locator("#sign-in-error")).to_contain_text("invalid token")


async def test_page_reconnects_after_its_node_restarts_and_shows_what_it_missed(
    full_stack: Stack, new_page: NewPage, nodes: list[str], screenshots: Path
) -> None:
    room, alice, bob = await two_nodes(new_page, nodes, "alice", "bob")
    await say(bob, "before the restart")
    await expect(confirmed(alice, room, "before the restart")).to_have_count(1)

    # WHEN alice's node stops, her page notices and keeps what she writes pending
    await asyncio.to_thread(full_stack.stop, ["gateway-1"])
    try:
        await expect(alice.locator("#status")).to_have_attribute("data-state", "reconnecting")
        missed = [f"missed {n}" for n in range(1, 4)]
        for text in missed:
            await say(bob, text)
            await expect(confirmed(bob, room, text)).to_have_count(1)
        await say(alice, "written while offline")
        await expect(
            messages(alice, room).and_(alice.locator('[data-state="pending"]'))
        ).to_have_count(1)
        await alice.screenshot(path=screenshots / "offline.png")
    finally:
        # THEN once the node is back, the page rejoins with since_seq and catches up
        await asyncio.to_thread(full_stack.start, ["gateway-1"])

    await expect(alice.locator("#status")).to_have_attribute("data-state", "online")
    for text in missed:
        await expect(confirmed(alice, room, text)).to_have_count(1)
    await expect(confirmed(alice, room, "written while offline")).to_have_count(1)
    await expect(confirmed(bob, room, "written while offline")).to_have_count(1)
    expected = ["before the restart", *missed, "written while offline"]
    for page in (alice, bob):
        await expect(messages(page, room).locator(".text")).to_have_text(expected)
        assert await seqs(page, room) == [1, 2, 3, 4, 5]
    await alice.screenshot(path=screenshots / "reconnected.png")


# ----- replies, edits, deletes, reactions, unread counts, read receipts -----


def unique_user(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:6]}"


def tool(message: Locator, name: str) -> Locator:
    """A control under a message: Reply, Edit, Delete or an emoji ("React 👍")."""
    return message.locator(".tools").get_by_role("button", name=name, exact=True)


def chip(message: Locator, emoji: str) -> Locator:
    return message.locator(f'.reactions button[data-emoji="{emoji}"]')


def badge(page: Page, room: str) -> Locator:
    return page.locator(f'#room-list li[data-room="{room}"] .unread')


async def edit(page: Page, message: Locator, text: str) -> None:
    await tool(message, "Edit").click()
    await page.fill("#text", text)
    await page.press("#text", "Enter")


async def test_a_reply_quotes_its_message_on_the_other_node(
    new_page: NewPage, nodes: list[str], screenshots: Path
) -> None:
    room, alice, bob = await two_nodes(new_page, nodes, "alice", "bob")
    await say(alice, "what time is lunch?")

    # WHEN bob replies to alice's message
    await tool(confirmed(bob, room, "what time is lunch?"), "Reply").click()
    await expect(bob.locator("#compose-context")).to_have_text(
        re.compile(r"Replying to alice: what time is lunch\?\s*Cancel")
    )
    await say(bob, "at noon")
    await expect(bob.locator("#compose-context")).to_be_hidden()

    # THEN both pages quote it above the reply, and count the reply under the message
    for page in (alice, bob):
        await expect(confirmed(page, room, "at noon").locator(".quote")).to_have_text(
            "↪ alice: what time is lunch?"
        )
        question = confirmed(page, room, "what time is lunch?")
        await expect(question.locator(".replies")).to_have_text("1 reply")
    # the thread lists the replies
    question = confirmed(alice, room, "what time is lunch?")
    await question.get_by_role("button", name="1 reply").click()
    await expect(question.locator(".thread li")).to_have_text(["bob: at noon"])
    await alice.screenshot(path=screenshots / "reply.png")


async def test_the_sender_edits_and_deletes_and_the_other_node_follows(
    new_page: NewPage, nodes: list[str], screenshots: Path
) -> None:
    room, alice, bob = await two_nodes(new_page, nodes, "alice", "bob")
    await say(alice, "see you at 5")
    await say(alice, "oops, wrong room")
    await expect(confirmed(bob, room, "oops, wrong room")).to_have_count(1)

    # only the sender gets the controls
    await expect(tool(confirmed(alice, room, "see you at 5"), "Edit")).to_be_visible()
    on_bobs_page = messages(bob, room)
    await expect(tool(on_bobs_page.first, "Reply")).to_be_visible()
    for name in ("Edit", "Delete"):
        await expect(on_bobs_page.locator(".tools").get_by_role("button", name=name)).to_have_count(
            0
        )

    # WHEN alice edits the first and deletes the second
    await edit(alice, confirmed(alice, room, "see you at 5"), "see you at 6")
    await tool(confirmed(alice, room, "oops, wrong room"), "Delete").click()

    # THEN both pages show the new text, marked edited, and a tombstone at the same seq
    for page in (alice, bob):
        shown = messages(page, room)
        await expect(shown.locator(".text")).to_have_text(["see you at 6", "message deleted"])
        await expect(shown.first.locator(".edited")).to_have_text("(edited)")
        await expect(shown.nth(1)).to_have_class(re.compile(r"\bdeleted\b"))
        await expect(shown.nth(1).locator(".tools button")).to_have_count(0)
        assert await seqs(page, room) == [1, 2]
    await bob.screenshot(path=screenshots / "edited-and-deleted.png")


async def test_reactions_toggle_and_both_nodes_agree_on_the_counts(
    new_page: NewPage, nodes: list[str]
) -> None:
    room, alice, bob = await two_nodes(new_page, nodes, "alice", "bob")
    await say(alice, "pizza tonight?")
    await expect(confirmed(bob, room, "pizza tonight?")).to_have_count(1)

    for page in (alice, bob):
        await tool(confirmed(page, room, "pizza tonight?"), "React 👍").click()
    for page in (alice, bob):
        thumbs = chip(confirmed(page, room, "pizza tonight?"), "👍")
        await expect(thumbs).to_have_text("👍 2")
        await expect(thumbs).to_have_attribute("aria-pressed", "true")

    # WHEN bob takes his back (the chip toggles) and alice adds another
    await chip(confirmed(bob, room, "pizza tonight?"), "👍").click()
    await tool(confirmed(alice, room, "pizza tonight?"), "React 🎉").click()
    for page, pressed in ((alice, "true"), (bob, "false")):
        message = confirmed(page, room, "pizza tonight?")
        await expect(message.locator(".reactions button")).to_have_text(["👍 1", "🎉 1"])
        await expect(chip(message, "👍")).to_have_attribute("aria-pressed", pressed)

    # a refused reaction is said on the message, and nothing changes
    await say(alice, "full of emojis")
    message_id = await confirmed(alice, room, "full of emojis").get_attribute("data-id")
    async with socket_as(nodes[0], "carol") as carol:
        await seed(carol, room, 0)
        for n in range(20):
            payload = {
                "room": room,
                "id": message_id,
                "emoji": f"e{n:02}",
                "on": True,
                "client_op_id": f"fill-{n}",
            }
            ack = await carol.call("react", payload, timeout=10)
            assert ack["ok"], ack
    full = confirmed(bob, room, "full of emojis")
    await expect(full.locator(".reactions button")).to_have_count(20)
    await tool(full, "React 😮").click()
    await expect(full.locator(".error")).to_have_text(
        "No reaction: this message has too many different emojis: pick one it has"
    )
    await expect(full.locator(".reactions button")).to_have_count(20)


async def until_unread(url: str, user: str, room: str, expected: int) -> None:
    """Wait (bounded) until GET /me/rooms, as persisted, gives ``room`` that unread count."""
    async with httpx.AsyncClient(base_url=url, headers={"X-User": user}, timeout=10) as client:

        async def shown() -> bool:
            response = await client.get("/me/rooms")
            response.raise_for_status()
            counts = {r["room"]: r["unread"] for r in response.json()["rooms"]}
            return counts.get(room) == expected

        await until(shown, f"{expected} unread in {room} at /me/rooms", every_s=0.2)


async def test_unread_badges_count_what_came_while_away_and_clear_on_opening(
    new_page: NewPage, nodes: list[str], screenshots: Path
) -> None:
    reader, writer = unique_user("uma"), unique_user("walt")
    lunch, other = unique_room("web"), unique_room("web")
    page = await open_chat(new_page, nodes[1], reader, lunch)
    await join(page, other)
    alice = await open_chat(new_page, nodes[0], writer, lunch)

    # WHEN messages come to a room that is not open, THEN its badge counts them
    await say(alice, "one")
    await say(alice, "two")
    await expect(badge(page, lunch)).to_have_text("2")
    await expect(badge(page, other)).to_have_text("")
    await page.screenshot(path=screenshots / "unread.png")
    # opening the room shows them and clears the badge
    await page.locator(f'#room-list li[data-room="{lunch}"] .room-name').click()
    await expect(messages(page, lunch).locator(".text")).to_have_text(["one", "two"])
    await expect(badge(page, lunch)).to_have_text("")

    await until_unread(nodes[1], reader, lunch, 0)  # the read position is persisted

    # WHEN the reader is away (no page open) and another message comes
    await page.close()
    await say(alice, "three")
    await expect(confirmed(alice, lunch, "three")).to_have_count(1)
    await until_unread(nodes[1], reader, lunch, 1)
    # THEN a fresh sign-in lists the user's rooms with their counts, and opening one reads it
    page = await new_page(nodes[1] + "/")
    await sign_in(page, reader)
    await expect(badge(page, lunch)).to_have_text("1")
    await expect(badge(page, other)).to_have_text("")
    await page.locator(f'#room-list li[data-room="{lunch}"] .room-name').click()
    await expect(confirmed(page, lunch, "three")).to_have_count(1)
    await expect(badge(page, lunch)).to_have_text("")
    await until_unread(nodes[1], reader, lunch, 0)


async def test_seen_by_shows_under_the_senders_last_message(
    new_page: NewPage, nodes: list[str], screenshots: Path
) -> None:
    room, alice, bob = await two_nodes(new_page, nodes, "alice", "bob")

    # WHEN bob's page shows alice's message, THEN alice sees that he saw it
    await say(alice, "did you see this?")
    await expect(confirmed(alice, room, "did you see this?").locator(".seen")).to_have_text(
        "Seen by bob"
    )
    # it moves to her newest message once bob has that one too
    await say(alice, "and this?")
    await expect(confirmed(alice, room, "and this?").locator(".seen")).to_have_text("Seen by bob")
    await expect(alice.locator(f'ol[data-room="{room}"] .seen')).to_have_count(1)
    # bob sent nothing: nothing is "seen" on his page
    await expect(bob.locator(f'ol[data-room="{room}"] .seen')).to_have_count(0)
    await alice.screenshot(path=screenshots / "seen-by.png")


async def expect_changed_state(page: Page, room: str) -> None:
    """The conversation of the reload test, as edited, deleted, replied to and reacted to."""
    plan = confirmed(page, room, "the plan: meet at 6")
    await expect(plan.locator(".edited")).to_have_text("(edited)")
    await expect(plan.locator(".reactions button")).to_have_text(["👍 1"])
    await expect(plan.locator(".replies")).to_have_text("1 reply")
    await expect(confirmed(page, room, "message deleted")).to_have_class(re.compile(r"\bdeleted\b"))
    reply = confirmed(page, room, "works for me")
    await expect(reply.locator(".quote")).to_have_text("↪ alice: the plan: meet at 6")
    await expect(messages(page, room).filter(has_text="a secret")).to_have_count(0)


async def test_a_reload_shows_edits_deletes_reactions_and_replies_from_history(
    new_page: NewPage, nodes: list[str], screenshots: Path
) -> None:
    room, alice, bob = await two_nodes(new_page, nodes, "alice", "bob")
    await say(alice, "the plan: meet at 5")
    await say(alice, "a secret")
    await tool(confirmed(bob, room, "the plan"), "Reply").click()
    await say(bob, "works for me")
    await expect(confirmed(alice, room, "works for me")).to_have_count(1)
    await edit(alice, confirmed(alice, room, "the plan"), "the plan: meet at 6")
    await tool(confirmed(alice, room, "a secret"), "Delete").click()
    await tool(confirmed(bob, room, "the plan"), "React 👍").click()
    await expect_changed_state(bob, room)

    # WHEN bob reloads, THEN the newest page and its event log give the same state
    await bob.reload()
    await expect(bob.locator("#status")).to_have_attribute("data-state", "online")
    await expect_changed_state(bob, room)
    await expect(chip(confirmed(bob, room, "the plan"), "👍")).to_have_attribute(
        "aria-pressed", "true"
    )

    # and once newer messages push them to an older page, history's own state says the same
    async with socket_as(nodes[0], "seeder") as seeder:
        await seed(seeder, room, HISTORY_PAGE)
    await bob.reload()
    await expect(confirmed(bob, room, f"seeded {HISTORY_PAGE}")).to_have_count(1)
    await bob.locator("#timeline").evaluate("t => { t.scrollTop = 0; }")
    await expect_changed_state(bob, room)
    await bob.locator("#timeline").evaluate("t => { t.scrollTop = 0; }")
    await bob.screenshot(path=screenshots / "older-page.png")


async def test_a_join_past_the_replay_cap_repairs_edits_deletes_and_reactions(
    new_page: NewPage, nodes: list[str], short_replay_node: GatewayNode
) -> None:
    room = unique_room("web")
    alice = await open_chat(new_page, nodes[0], "alice", room)
    bob = await open_chat(new_page, short_replay_node.url, "bob", room)
    await say(alice, "first draft")
    await say(alice, "to be removed")
    await expect(confirmed(bob, room, "to be removed")).to_have_count(1)

    # WHEN bob's node is down while five room events happen (it replays two per join)
    await asyncio.to_thread(short_replay_node.stop)
    try:
        await expect(bob.locator("#status")).to_have_attribute("data-state", "reconnecting")
        await edit(alice, confirmed(alice, room, "first draft"), "final draft")
        await tool(confirmed(alice, room, "to be removed"), "Delete").click()
        await tool(confirmed(alice, room, "final draft"), "React 🎉").click()
        await expect(chip(confirmed(alice, room, "final draft"), "🎉")).to_have_text("🎉 1")
        await say(alice, "later 1")
        await say(alice, "later 2")
        await expect(confirmed(alice, room, "later 2")).to_have_count(1)
    finally:
        await asyncio.to_thread(short_replay_node.start)

    # THEN its join answers gap: true and the page repairs the rest from the event log
    await expect(bob.locator("#status")).to_have_attribute("data-state", "online")
    shown = messages(bob, room)
    await expect(shown.locator(".text")).to_have_text(
        ["final draft", "message deleted", "later 1", "later 2"]
    )
    await expect(shown.first.locator(".edited")).to_have_text("(edited)")
    await expect(shown.first.locator(".reactions button")).to_have_text(["🎉 1"])
    assert await seqs(bob, room) == [1, 2, 6, 7]
    # (the node did cut the replay short: the same join answers gap: true)
    async with socket_as(short_replay_node.url, "dora") as dora:
        ack = await dora.call("join", {"room": room, "since_seq": 2}, timeout=10)
        assert ack["ok"] and ack["gap"] is True, ack
